"""Offline advisory databases: import OSV and Alpine secdb files (``store.py``), evaluate their version ranges with
each ecosystem's own ordering (``versions.py``) and match stored inventories (``matcher.py``)."""
