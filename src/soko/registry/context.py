"""What every part of the domain shares: settings, the metadata database, blob storage, and the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from soko.config import Settings
from soko.meta import Database
from soko.storage import StorageDriver


@dataclass
class DomainContext:
    settings: Settings
    db: Database
    storage: StorageDriver
    clock: Callable[[], float] = field(default=time.time)


def blob_path(digest: str) -> str:
    """Where a blob's content lives: blobs/<algorithm>/<first two hex>/<hex> (digest-addressed, nothing else)."""
    algorithm, _, hex_ = digest.partition(":")
    return f"blobs/{algorithm}/{hex_[:2]}/{hex_}"


def upload_path(upload_id: str) -> str:
    return f"uploads/{upload_id}/data"
