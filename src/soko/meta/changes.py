"""A cross-process "metadata changed" generation counter that lets every process cache hot reads safely.

Readers tag cached lookups with the generation they saw *before* querying; any write that could change a cached
answer bumps the generation *after* committing, so a stale entry is never served past the bump. The counter lives
in a small memory-mapped file shared by all workers on a host (a read costs ~100 ns). With PostgreSQL, writers also
``NOTIFY soko_changes`` inside their transaction and every node runs a listener that bumps its local counter, so
nodes behind a load balancer invalidate each other.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import threading

from soko import private

log = logging.getLogger("soko.changes")
CHANNEL = "soko_changes"


class Generation:
    def __init__(self, path: str) -> None:
        private.make_dirs(os.path.dirname(os.path.abspath(path)))
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < 8:
            os.ftruncate(self._fd, 8)
        self._map = mmap.mmap(self._fd, 8)

    def current(self) -> int:
        return struct.unpack_from("<Q", self._map, 0)[0]

    def bump(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            struct.pack_into("<Q", self._map, 0, (self.current() + 1) & 0xFFFFFFFFFFFFFFFF)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class PostgresListener(threading.Thread):
    """Bumps the local generation whenever another node commits a change (LISTEN soko_changes)."""

    def __init__(self, dsn: str, generation: Generation) -> None:
        super().__init__(name="soko-changes", daemon=True)
        self._dsn = dsn
        self._generation = generation
        self._stop = threading.Event()

    def run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._generation.bump()  # anything may have changed while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=100):
                            self._generation.bump()
            except Exception as exc:  # the database restarted or the network blinked: reconnect
                log.warning("lost the change listener connection (%s); reconnecting", exc)
                self._generation.bump()
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
