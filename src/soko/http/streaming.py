"""Moving request bodies into the domain without holding them in memory.

Bodies are gathered into ~1 MiB pieces on the event loop, and each piece is written, hashed and kept (the plaintext
cache's copy) on worker threads while the loop already receives the next ones: hashlib, AES-GCM and file writes
release the GIL, so a push uses both cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from soko.errors import SizeInvalid, UploadInvalid
from soko.http.messages import BodyInterrupted, Request

PIECE = 1 << 20


class BodySink(Protocol):
    def store(self, pieces: Sequence[bytes]) -> object: ...
    def digest(self, pieces: Sequence[bytes]) -> object: ...
    @property
    def keeps(self) -> bool:
        """Whether ``keep`` runs too: a third lane, the plaintext cache's copy (soko.registry.uploads)."""
        ...
    def keep(self, pieces: Sequence[bytes]) -> object: ...


DEPTH = 2  # pieces a lane may have waiting beyond the one it works on


class _Lane:
    """One of the sink's steps (store, digest, keep) run on the thread pool piece after piece, in order, while the
    loop receives the next pieces and the other lanes go at their own pace. Before lanes were decoupled, each piece
    waited for all three steps of the one before: the loop then stopped reading the body (granian reads the socket
    only when asked), a third of a push's time here."""

    def __init__(self, loop: asyncio.AbstractEventLoop, step: Callable[[Sequence[bytes]], object]) -> None:
        self._loop = loop
        self._step = step
        self._queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(DEPTH)
        self.error: BaseException | None = None
        self.aborted = False
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        while (parts := await self._queue.get()) is not None:
            if self.error is None and not self.aborted:  # (after either: drain, so a put never waits forever)
                try:
                    await self._loop.run_in_executor(None, self._step, parts)
                except BaseException as exc:  # raised by the pump at its next put
                    self.error = exc

    async def put(self, parts: list[bytes]) -> None:
        if self.error is not None:
            raise self.error
        await self._queue.put(parts)

    async def finish(self) -> None:
        """Wait until every piece put is done (or skipped after an abort); raises what a step raised."""
        await self._queue.put(None)
        await self._task
        if self.error is not None and not self.aborted:
            raise self.error


async def pump_body(request: Request, sink: BodySink, expected: int | None) -> int:
    """Stream the request body into ``sink``; returns the byte count.

    The parts the server hands over are gathered (not copied) into ~1 MiB pieces; each piece is stored, hashed and
    (when the sink keeps a copy) kept by lanes on pool threads, each lane in order and up to ``DEPTH`` pieces
    behind, while the loop receives the next. Raises SizeInvalid when the body does not match Content-Length —
    which is how a client that went away mid-body shows: granian ends such a body early without an error. A
    chunked body cut off between chunks cannot be told from a complete one; the digest check at completion is
    what catches it.
    """
    loop = asyncio.get_running_loop()
    steps = [sink.store, sink.digest] + ([sink.keep] if sink.keeps else [])
    lanes = [_Lane(loop, step) for step in steps]
    parts: list[bytes] = []
    buffered = total = 0
    try:
        async for data in request.iter_body():
            parts.append(data)
            buffered += len(data)
            total += len(data)
            if expected is not None and total > expected:
                raise SizeInvalid(f"request body is longer than its Content-Length of {expected} bytes")
            if buffered >= PIECE:
                for lane in lanes:
                    await lane.put(parts)
                parts, buffered = [], 0
        if parts:
            for lane in lanes:
                await lane.put(parts)
        for lane in lanes:
            await lane.finish()
    except BaseException as exc:  # (cancellation too: a drain that timed out)
        # Never leave a piece being written behind us: the caller aborts the chunk as soon as we raise.
        for lane in lanes:
            lane.aborted = True
        await asyncio.shield(asyncio.gather(*(lane.finish() for lane in lanes), return_exceptions=True))
        if isinstance(exc, BodyInterrupted):
            raise UploadInvalid(f"the client stopped sending the body after {total} bytes ({exc})") from None
        raise
    if expected is not None and total != expected:
        raise SizeInvalid(f"request body has {total} bytes but Content-Length says {expected}")
    return total
