"""Encryption at rest: a storage driver that seals everything it stores (``crypto/driver.py``) in authenticated
segments (``crypto/segments.py``) under per-object data keys wrapped by a service key (``crypto/keys.py``)."""
