"""A blob fetch in progress in this process that pulls follow while it is stored.

One thread (the *pump*) drives the fetch to its end — every piece stored, hashed, the blob verified and committed —
whatever the pulls do: a pull that goes away does not stop the cache from filling. Each pull that follows gets the
pieces from the first one, as they arrive; the last piece comes only once the blob is verified and visible (the
fetch's own rule: ``PullThroughCache._fetch_blob``).

Memory is bounded: pieces every follower has passed are dropped at once; pieces no follower has asked for yet (a
prefetch started when the manifest came in, before the client asks for the blob) are kept up to ``window`` bytes,
then the pump waits up to ``patience`` seconds for a follower to take them. After that it drops them and goes on
storing alone, as it does for a follower that stalls that long (that pull ends with an error, as a cut connection
would). A pull that comes when the first pieces are gone cannot follow: it waits for the stored blob.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator

from soko.errors import SokoError

log = logging.getLogger("soko.pullthrough")


class FellBehind(SokoError):
    """A pull stopped reading for longer than the fetch waits for it."""


class LiveFetch:
    def __init__(
        self,
        digest: str,
        size: int,
        pieces: Iterator[bytes],
        close: Callable[[], None],
        *,
        window: int,
        patience: float,
    ) -> None:
        self.digest = digest
        self.size = size
        self._source = pieces
        self._close = close
        self._window = window
        self._patience = patience
        self._cond = threading.Condition()
        self._pieces: list[bytes] = []
        self._base = 0  # the index (in the blob's pieces) of _pieces[0]
        self._held = 0  # bytes in _pieces
        self._cursors: dict[int, int] = {}  # follower → the index of the next piece it takes
        self._done = False
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done

    def pump(self, finished: Callable[[LiveFetch], None]) -> None:
        """Drive the fetch to its end (on a thread of its own); ``finished`` is called last, whatever happened."""
        try:
            for piece in self._source:
                with self._cond:
                    self._pieces.append(piece)
                    self._held += len(piece)
                    self._cond.notify_all()
                    self._make_room()
        except BaseException as exc:  # the followers raise it; the fetch has abandoned its upload
            self._error = exc
        finally:
            try:
                self._close()
            except Exception:
                log.exception("closing the fetch of %s failed", self.digest)
            with self._cond:
                self._done = True
                self._cond.notify_all()
            finished(self)

    def _make_room(self) -> None:
        """(holding the lock) Drop what every follower has passed; past the window, wait for followers, then drop
        what they have not taken."""
        deadline = time.monotonic() + self._patience
        while True:
            keeping = [cursor for cursor in self._cursors.values() if cursor >= self._base]  # (not the fallen)
            if keeping:
                passed = min(keeping) - self._base
                if passed > 0:
                    self._held -= sum(len(p) for p in self._pieces[:passed])
                    del self._pieces[:passed]
                    self._base += passed
            if self._held <= self._window:
                return
            remaining = deadline - time.monotonic()
            # once the first pieces are gone no new follower can come: with none left to wait for, go on at once
            if remaining <= 0 or (self._base > 0 and not keeping):
                self._base += len(self._pieces)
                self._pieces.clear()
                self._held = 0
                self._cond.notify_all()  # a follower behind the base now raises FellBehind
                return
            self._cond.wait(remaining)

    def follow(self, *, starter: bool = False) -> Generator[bytes, None, None] | None:
        """The blob's pieces from the first, as they come (None: the first pieces are gone, or the fetch is over:
        look for the stored blob instead). ``starter``: the pull that started the fetch, which follows it even when
        it is over already (to get its error). Close the generator when not reading it to the end."""
        with self._cond:
            if self._base > 0 or (self._done and not starter):
                return None
            key = object()
            self._cursors[id(key)] = 0
        return self._follow(key)

    def _follow(self, key: object) -> Generator[bytes, None, None]:
        index = 0
        try:
            while True:
                with self._cond:
                    while True:
                        if index < self._base:
                            raise FellBehind(
                                f"the pull of blob {self.digest} stopped reading for over {self._patience:.0f} s; "
                                "pull again"
                            )
                        if index - self._base < len(self._pieces):
                            piece = self._pieces[index - self._base]
                            break
                        if self._done:
                            if self._error is not None:
                                raise self._error
                            return
                        self._cond.wait()
                    index += 1
                    self._cursors[id(key)] = index
                    self._cond.notify_all()  # the pump may be waiting for room
                yield piece
        finally:
            with self._cond:
                self._cursors.pop(id(key), None)
                self._cond.notify_all()
