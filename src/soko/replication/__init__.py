"""Replication of images to other registries (issue 16): rules → requests (from the events outbox, or a backfill)
→ one leased job per image and destination. See ``service.py``."""

from soko.replication.service import MAX_ATTEMPTS, PermanentFailure, Replicator
from soko.replication.store import KIND

__all__ = ["KIND", "MAX_ATTEMPTS", "PermanentFailure", "Replicator"]
