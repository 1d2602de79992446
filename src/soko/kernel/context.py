"""What every part of the domain shares: settings, the metadata database, blob storage, and the clock."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko.config import Settings
from soko.kernel.unit_of_work import UnitOfWork
from soko.meta import Database
from soko.meta.changes import Generation
from soko.storage import StorageDriver
from soko.storage.paths import ARCHIVE
from soko.storage.plain_cache import PlainCache

ARCHIVE_PREFIX = ARCHIVE + "/"


@dataclass
class DomainContext:
    settings: Settings
    db: Database
    storage: StorageDriver
    # The archive tier's store (archive_storage_url); None: the same store (paths under archive/ keep them apart).
    archive: StorageDriver | None = None
    generation: Generation = field(init=False)
    clock: Callable[[], float] = field(default=time.time)
    # Decrypted blobs in memory (soko.storage.plain_cache), attached by the server; None: every pull decrypts.
    plain_cache: PlainCache | None = None

    def __post_init__(self) -> None:
        self.generation = Generation(os.path.join(self.settings.data_dir, "generation"))

    @property
    def archive_storage(self) -> StorageDriver:
        return self.archive if self.archive is not None else self.storage

    def store_for(self, path: str) -> StorageDriver:
        """The store that holds ``path``: the archive store for archive copies, else standard storage."""
        return self.archive_storage if path.startswith(ARCHIVE_PREFIX) else self.storage

    @contextlib.contextmanager
    def transaction(self, *, invalidates: bool = False) -> Iterator[UnitOfWork]:
        """A domain write: one transaction and its after-write effects (``soko.kernel.unit_of_work``);
        ``invalidates`` when it changes answers that readers cache (tags, manifests…)."""
        tx: UnitOfWork | None = None
        try:
            with self.db.write() as conn:
                tx = UnitOfWork(self, conn, invalidates=invalidates)
                yield tx
                tx.before_commit()
        except BaseException:
            if tx is not None and tx.notified is not None:
                tx.notified[0].forget(tx.notified[1])
            raise
        if tx.invalidates:
            self.generation.bump()
        if tx.events:
            self.generation.bump_events()  # wakes webhook delivery and `soko events tail` on this host
        if tx.notified is not None:  # other nodes see this write before the caller can ask them (soko.meta.changes)
            tx.notified[0].delivered(tx.notified[1])

    @contextlib.contextmanager
    def write(self, *, invalidates: bool = False) -> Iterator[sa.Connection]:
        """``transaction()`` for writes whose only effect is cache invalidation (settings, identities…)."""
        with self.transaction(invalidates=invalidates) as tx:
            yield tx.conn
