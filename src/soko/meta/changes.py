"""A cross-process "metadata changed" generation counter that lets every process cache hot reads safely.

Readers tag cached lookups with the generation they saw *before* querying; any write that could change a cached
answer bumps the generation *after* committing, so a stale entry is never served past the bump. The counter lives
in a small memory-mapped file shared by all workers on a host (a read costs ~100 ns). With PostgreSQL, writers also
``NOTIFY soko_changes`` inside their transaction and every node runs a listener that bumps its local counter, so
nodes behind a load balancer invalidate each other. The listener thread may wait for the GIL (up to the 5 ms switch
interval) after a notification has arrived, so a reader also looks at the listener's socket itself (a zero-timeout
poll, ~1 µs): a notification that has reached this node is honoured by the very next read, and while the listener
is not connected nothing cached is trusted. PostgreSQL delivers notifications to listeners after the commit has
returned, each listener on its own schedule (measured here: p50 12 µs, p99 0.3 ms, up to 3 ms apart under load),
so a writer also waits (at most ``DELIVERY_WAIT``) until its own notification has come back through its own listener
before answering: PostgreSQL signals every listener at that commit, so other nodes usually have it by the time the
client's next request reaches them. Usually, not always: across nodes this is bounded staleness (a few ms under load;
`tests/e2e/test_cluster.py` measures it), as with ECR's and IAM's own eventual consistency; on one node it is exact.

A second counter in the same file, the *events* generation, moves after every commit that wrote events-outbox rows
(``DomainContext.transaction``; other nodes' through ``NOTIFY soko_events``): webhook delivery (``soko.events``) and
``soko events tail`` wait on it (``wait_events``) instead of querying the outbox on a timer.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import mmap
import os
import select
import struct
import threading
import time
from collections.abc import Callable

from soko import private

log = logging.getLogger("soko.changes")
CHANNEL = "soko_changes"
EVENTS_CHANNEL = "soko_events"  # a commit wrote outbox rows (soko.kernel.unit_of_work)
DELIVERY_WAIT = 0.1  # seconds a writer waits for its notification to come back (then answers anyway)
EVENTS_SLICE = 0.025  # how often a waiter looks at the shared counter (other processes' bumps wake no condition here)
_CACHE, _EVENTS = 0, 8  # offsets of the two counters in the file


class Generation:
    def __init__(self, path: str) -> None:
        private.make_dirs(os.path.dirname(os.path.abspath(path)))
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < 16:
            os.ftruncate(self._fd, 16)
        self._map = mmap.mmap(self._fd, 16)
        self._events_moved = threading.Condition()  # wakes this process's waiters at once
        self.sync: Callable[[], None] | None = None  # called before each read: see PostgresListener.sync
        self.listener: PostgresListener | None = None

    def current(self) -> int:
        if self.sync is not None:
            self.sync()
        return struct.unpack_from("<Q", self._map, _CACHE)[0]

    def bump(self) -> None:
        self._bump(_CACHE)

    def events(self) -> int:
        """The events generation: moves after every commit that wrote outbox rows (on this host, or announced by
        another node's ``NOTIFY soko_events``)."""
        return struct.unpack_from("<Q", self._map, _EVENTS)[0]

    def bump_events(self) -> None:
        self._bump(_EVENTS)
        with self._events_moved:
            self._events_moved.notify_all()

    def wait_events(self, seen: int, timeout: float) -> bool:
        """Wait until the events generation is no longer ``seen`` (True) or ``timeout`` seconds pass (False).
        A bump in this process wakes the wait at once; another process's is seen within ``EVENTS_SLICE``."""
        deadline = time.monotonic() + timeout
        with self._events_moved:
            while self.events() == seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._events_moved.wait(min(left, EVENTS_SLICE))
        return True

    def _bump(self, offset: int) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = struct.unpack_from("<Q", self._map, offset)[0]
            struct.pack_into("<Q", self._map, offset, (value + 1) & 0xFFFFFFFFFFFFFFFF)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._map.closed:
            return
        self._map.close()
        os.close(self._fd)


class PostgresListener(threading.Thread):
    """Bumps the local generation whenever another node commits a change (LISTEN soko_changes), and the events
    generation when one commits events (LISTEN soko_events)."""

    def __init__(self, dsn: str, generation: Generation) -> None:
        super().__init__(name="soko-changes", daemon=True)
        self._dsn = dsn
        self._generation = generation
        self._stopping = threading.Event()
        self._wake: tuple[int, int] | None = None  # (read, write): stop() wakes the thread's poll through it
        self._fd: int | None = None  # the LISTEN connection's socket while it is connected
        self._reading = False  # notifications are being taken off the socket, not yet counted
        self._prefix = f"{os.getpid()}-{os.urandom(4).hex()}-"
        self._sequence = itertools.count()
        self._awaited: dict[str, threading.Event] = {}  # payloads of this process's writes, until they come back
        generation.sync = self.sync
        generation.listener = self

    def expect(self) -> str:
        """A payload for a write's NOTIFY; pass it to ``delivered`` after the commit (or ``forget``)."""
        payload = f"{self._prefix}{next(self._sequence)}"
        self._awaited[payload] = threading.Event()
        return payload

    def delivered(self, payload: str) -> bool:
        """Waits until the notification with ``payload`` has reached this listener (not while disconnected)."""
        event = self._awaited.get(payload)
        try:
            return event is None or self._fd is None or event.wait(DELIVERY_WAIT)
        finally:
            self.forget(payload)

    def forget(self, payload: str) -> None:
        self._awaited.pop(payload, None)

    def sync(self) -> None:
        """Before a cached read: a notification that has reached the socket but that this thread has not counted
        yet (or no listening connection at all) means the cache may be stale, so the generation moves on now
        rather than when this thread next gets the GIL."""
        fd = self._fd
        if fd is None or self._reading or _readable(fd):
            self._generation.bump()

    def start(self) -> None:
        self._wake = os.pipe()
        super().start()

    def run(self) -> None:
        import psycopg

        assert self._wake is not None
        wake = self._wake[0]
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    poll = select.poll()
                    poll.register(conn.fileno(), select.POLLIN)
                    poll.register(wake, select.POLLIN)
                    self._fd = conn.fileno()
                    self._generation.bump()  # anything may have changed while we were not listening
                    self._generation.bump_events()
                    while not self._stopping.is_set():
                        if not poll.poll(1000) or self._stopping.is_set():  # waits without the GIL
                            continue
                        self._reading = True
                        events = False
                        try:
                            for notify in conn.notifies(timeout=0.05, stop_after=1):
                                if notify.channel == EVENTS_CHANNEL:
                                    events = True
                                elif (event := self._awaited.get(notify.payload)) is not None:
                                    event.set()
                        finally:
                            self._generation.bump()
                            self._reading = False
                            if events:
                                self._generation.bump_events()
            except Exception as exc:  # the database restarted or the network blinked: reconnect
                log.warning("lost the change listener connection (%s); reconnecting", exc)
            finally:
                self._fd = None
            self._generation.bump()
            self._stopping.wait(1.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and wait for the thread (it closes its connection, and it bumps the generation until it
        ends: the generation may be closed once this returns)."""
        self._stopping.set()
        self._generation.sync = None
        self._generation.listener = None
        if self._wake is None:  # never started, or stopped already
            return
        os.write(self._wake[1], b"x")
        self.join(timeout)
        if self.is_alive():  # (a connect hanging past ``timeout``: the pipe stays, its thread still polls it)
            log.warning("the change listener did not stop within %.0f s", timeout)
            return
        wake, self._wake = self._wake, None
        os.close(wake[0])
        os.close(wake[1])


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data waiting, without blocking. poll, not select: a busy node has descriptors past
    select's FD_SETSIZE (1024), where select raises. A poll object serves one caller at a time, so each call makes its
    own."""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))
