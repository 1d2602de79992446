"""Moving request bodies into the domain without holding them in memory.

Bodies are gathered into ~1 MiB pieces on the event loop, and each piece is written (and hashed) on a worker thread
while the loop already reads the next one: hashlib and file writes release the GIL, so a push uses both cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from soko.errors import SizeInvalid, UploadInvalid
from soko.http.messages import BodyInterrupted, Request

PIECE = 1 << 20


async def pump_body(request: Request, write: Callable[[bytes], object], expected: int | None) -> int:
    """Stream the request body to ``write`` (called on a thread, in order); returns the byte count.

    Raises UploadInvalid when the client disconnects mid-body, SizeInvalid when the body does not match
    Content-Length.
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
                piece = parts[0] if len(parts) == 1 else b"".join(parts)
                parts, buffered = [], 0
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(None, write, piece)
        if pending is not None:
            await pending
            pending = None
        if parts:
            await loop.run_in_executor(None, write, b"".join(parts))
    except Exception as exc:
        # Never leave a piece being written behind us: the caller aborts the chunk as soon as we raise.
        if pending is not None:
            await asyncio.gather(pending, return_exceptions=True)
        if isinstance(exc, BodyInterrupted):
            raise UploadInvalid(f"the client stopped sending the body after {total} bytes ({exc})") from None
        raise
    if expected is not None and total != expected:
        raise SizeInvalid(f"request body has {total} bytes but Content-Length says {expected}")
    return total


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        return None
    parts: list[bytes] = []
    total = 0
    try:
        async for data in request.iter_body():
            total += len(data)
            if total > limit:
                return None
            parts.append(data)
    except BodyInterrupted as exc:
        raise UploadInvalid(f"the request body was cut off after {total} bytes: {exc}") from None
    return b"".join(parts)
