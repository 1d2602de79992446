"""Online garbage collection: reclaims unreferenced blobs and abandoned uploads without blocking pushes or pulls."""

from soko.gc.collector import GarbageCollector, GcReport

__all__ = ["GarbageCollector", "GcReport"]
