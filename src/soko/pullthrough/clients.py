"""The upstream clients of a process's pull-through caches: one per rule, built for the rule's upstream and the
version of its secret that pulls last read.

When the secret gets a new version (or the rule a new upstream or secret), the next pull builds a new client and
the old one is retired: closed (its connections and tokens dropped) once the last pull using it lets go, so a blob
streaming through it runs to its end. A rule deleted or changed retires its client the same way (``retire``), with
no pull needed. Pulls take a client with ``lease`` and give it back by calling ``release``.

A pull may hold a rule read just before it was deleted or changed, and ask for its client only after the rule's
client was retired: ``retire`` keeps the versions of the rules it retired (``gone``; the last ``GONE_KEPT``), and a
lease for one of them gets a client of its own, closed when that pull lets go, instead of one kept for the slot
until the next change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable

from soko.remote import RegistryClient

Slot = tuple[str, str]  # (account, rule prefix)
Version = tuple[Hashable, ...]  # what the slot's client was built for
GONE_KEPT = 1024  # rule versions retired lately (a pull that raced the change asks within moments)


class UpstreamClients:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[Slot, tuple[Version, RegistryClient]] = {}
        self._leases: dict[RegistryClient, int] = {}  # clients in use → pulls using them
        self._retired: set[RegistryClient] = set()  # replaced, closed when their last lease goes
        self._gone: dict[tuple[Slot, Hashable], None] = {}  # (slot, rule version) retired, oldest first

    def lease(
        self, slot: Slot, version: Version, make: Callable[[], RegistryClient], rule: Hashable = None
    ) -> tuple[RegistryClient, Callable[[], None]]:
        """The slot's client for ``version`` (made if the slot has another or none), and its release (idempotent).
        ``rule``: the version of the rule the pull read; one retired since gets a client for this pull alone."""
        idle: RegistryClient | None = None
        with self._lock:
            entry = self._current.get(slot)
            if (slot, rule) in self._gone:
                client = make()
                self._retired.add(client)  # (closes with this lease: the slot keeps what it has)
            elif entry is not None and entry[0] == version:
                client = entry[1]
            else:
                client = make()
                self._current[slot] = (version, client)
                if entry is not None:
                    idle = self._retire(entry[1])
            self._leases[client] = self._leases.get(client, 0) + 1
        if idle is not None:
            idle.close()
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):
                self._release(client)

        return client, release

    def retire(
        self,
        stale: Callable[[Slot, Version], bool],
        gone: Iterable[tuple[Slot, Hashable]] = (),
        current: Iterable[tuple[Slot, Hashable]] = (),
    ) -> None:
        """Retire the clients of the slots ``stale`` picks (their rule deleted or changed): each closes now, or when
        the last pull using it lets go; the slot's next lease builds a new one. ``gone``: (slot, rule version) of
        the rules deleted or changed, for the leases that come late (``lease``); ``current``: those the rules now
        are (a rule made again with a version that was gone, as a stopped clock can make it)."""
        with self._lock:
            for key in gone:
                self._gone.pop(key, None)
                self._gone[key] = None
            for key in current:
                self._gone.pop(key, None)
            while len(self._gone) > GONE_KEPT:
                del self._gone[next(iter(self._gone))]
            picked = [slot for slot, (version, _) in self._current.items() if stale(slot, version)]
            idle = [client for slot in picked if (client := self._retire(self._current.pop(slot)[1])) is not None]
        for client in idle:
            client.close()

    def _retire(self, client: RegistryClient) -> RegistryClient | None:
        """(under the lock) The client to close now, if no pull uses it; else it closes with its last lease."""
        if self._leases.get(client):
            self._retired.add(client)
            return None
        return client

    def _release(self, client: RegistryClient) -> None:
        with self._lock:
            left = self._leases[client] - 1
            if left:
                self._leases[client] = left
                return
            del self._leases[client]
            if client not in self._retired:
                return
            self._retired.discard(client)
        client.close()

    def open_count(self) -> int:
        """Clients not closed yet: the slots' current ones and retired ones still in use."""
        with self._lock:
            return len(self._current) + len(self._retired)

    def close(self) -> None:
        """Close every client (the process is stopping)."""
        with self._lock:
            clients = {client for _, client in self._current.values()} | self._retired
            self._current, self._retired = {}, set()
        for client in clients:
            client.close()
