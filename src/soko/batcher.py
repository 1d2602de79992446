"""In-memory batches written to the database about once a second (audit rows, pull times): one rule for all.

Records are merged by key while they wait (an allow decision repeated, a manifest pulled again). ``flush`` takes
the batch and writes it; when the write fails (the database is down or restarting) the batch goes back, merged
with what arrived meanwhile, and the next flush tries again — nothing is lost to a failed write. Memory is bounded:
at ``limit`` waiting keys, new keys are dropped and counted (``dropped``, exported as ``soko_batch_dropped``);
records for keys already waiting still merge.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BATCHERS: dict[str, Batcher] = {}  # by name, for /metrics (the process's most recent batcher of each name)


class Batcher(Generic[K, V]):
    def __init__(
        self, name: str, write: Callable[[dict[K, V]], None], merge: Callable[[V, V], V], limit: int = 100_000
    ) -> None:
        self.name = name
        self._write = write
        self._merge = merge
        self.limit = limit
        self.dropped = 0
        self._pending: dict[K, V] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time, so a batch put back keeps its order
        BATCHERS[name] = self

    def add(self, key: K, value: V) -> None:
        with self._lock:
            self._put(key, value)

    def bump(self, key: K, make: Callable[[], V], delta: V) -> None:
        """``add(key, make())``, but when ``key`` is already waiting only ``delta`` is merged into it: ``make`` (a
        whole record, which may cost) runs only for a new key. One step under the lock, like ``add``."""
        with self._lock:
            old = self._pending.get(key)
            if old is not None:
                self._pending[key] = self._merge(old, delta)
            elif len(self._pending) < self.limit:
                self._pending[key] = make()
            else:
                self.dropped += 1

    def _put(self, key: K, value: V) -> None:
        old = self._pending.get(key)
        if old is not None:
            self._pending[key] = self._merge(old, value)
        elif len(self._pending) < self.limit:
            self._pending[key] = value
        else:
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._pending)

    def snapshot(self) -> dict[K, V]:
        """What is waiting, as of now (a copy)."""
        with self._lock:
            return dict(self._pending)

    @contextlib.contextmanager
    def holding_flushes(self) -> Iterator[None]:
        """No batch moves to the database meanwhile: a reader adding the database and ``snapshot()`` up counts every
        record exactly once."""
        with self._flush_lock:
            yield

    def flush(self) -> int:
        """Write what is waiting; on failure put it back (and raise, so the caller logs it)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                self._write(batch)
            except BaseException:
                with self._lock:
                    newer, self._pending = self._pending, {}
                    for key, value in batch.items():
                        self._put(key, value)
                    for key, value in newer.items():
                        self._put(key, value)
                raise
            return len(batch)
