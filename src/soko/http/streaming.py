"""Moving request bodies into the domain without holding them in memory.

Bodies are gathered into ~1 MiB pieces on the event loop, and each piece is written and hashed on two worker threads
while the loop already receives the next one: hashlib and file writes release the GIL, so a push uses both cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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


async def pump_body(request: Request, sink: BodySink, expected: int | None) -> int:
    """Stream the request body into ``sink``; returns the byte count.

    The parts the server hands over are gathered (not copied) into ~1 MiB pieces; each piece is stored and hashed
    on two pool threads at once while the loop receives the next. Raises SizeInvalid when the body does not match
    Content-Length — which is how a client that went away mid-body shows: granian ends such a body early without
    an error. A chunked body cut off between chunks cannot be told from a complete one; the digest check at
    completion is what catches it.
    """
    loop = asyncio.get_running_loop()
    pending: asyncio.Future | None = None
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
                if pending is not None:
                    await pending
                pending = _both(loop, sink, parts)
                parts, buffered = [], 0
        if pending is not None:
            await pending
            pending = None
        if parts:
            await _both(loop, sink, parts)
    except BaseException as exc:  # (cancellation too: a drain that timed out)
        # Never leave a piece being written behind us: the caller aborts the chunk as soon as we raise.
        if pending is not None:
            await asyncio.shield(asyncio.gather(pending, return_exceptions=True))
        if isinstance(exc, BodyInterrupted):
            raise UploadInvalid(f"the client stopped sending the body after {total} bytes ({exc})") from None
        raise
    if expected is not None and total != expected:
        raise SizeInvalid(f"request body has {total} bytes but Content-Length says {expected}")
    return total


def _both(loop: asyncio.AbstractEventLoop, sink: BodySink, parts: list[bytes]) -> asyncio.Future:
    lanes = [loop.run_in_executor(None, sink.store, parts), loop.run_in_executor(None, sink.digest, parts)]
    if sink.keeps:
        lanes.append(loop.run_in_executor(None, sink.keep, parts))
    return asyncio.gather(*lanes)

