"""Online garbage collection: reclaims unreferenced blobs and abandoned uploads without blocking pushes or pulls."""

from soko.gc.collector import GarbageCollector, GcReport
from soko.gc.queue import enqueue_link_reviews

__all__ = ["GarbageCollector", "GcReport", "enqueue_link_reviews"]
