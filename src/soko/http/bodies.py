"""Request bodies that must be held whole before they can be checked (the AWS APIs' JSON documents and forms, whose
SigV4 signature covers the body, and registry manifests): a per-process memory budget, charged by the bytes that
actually arrived, a minimum transfer rate and a longest pause.

Without them, clients that never had a valid key could make a worker buffer 32 MiB each (20 of them took 746 MB)
or hold connections open by trickling a byte every few seconds. Bodies streamed to storage (blob uploads) are not
held in memory and do not go through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from soko.http.messages import BodyInterrupted, Request

BODY_BUDGET = 128 << 20  # body bytes each process holds at once; beyond it, 503 (clients retry)
GRACE = 10.0  # seconds any body may take, whatever its size
MIN_RATE = 32 << 10  # bytes per second a body must average beyond the grace period
MAX_GAP = 10.0  # seconds a body may go without a byte, however fast it came before
BUSY = "too many request bodies are being received at once; retry shortly"


class BodyRefused(Exception):
    """``reason``: ``too_large`` (over the limit), ``busy`` (the memory budget is spent), ``slow`` or
    ``interrupted`` (the client went away mid-body: a clean 400, no traceback)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class BodyBudget:
    """Bytes of request bodies a process holds at once (one event loop: no lock needed). Only bytes that arrived
    count: a declared Content-Length reserves nothing, so headers alone cannot spend it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, size: int, share: float = 1.0) -> bool:
        """Whether ``size`` more bytes keep the bytes held within ``share`` of the limit."""
        return self.used + size <= self.limit * share

    def take(self, size: int, share: float = 1.0) -> bool:
        if not self.fits(size, share):
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


@asynccontextmanager
async def whole_body(
    request: Request,
    limit: int,
    budget: BodyBudget,
    grace: float | None = None,
    min_rate: float | None = None,
    share: float = 1.0,
) -> AsyncIterator[bytes]:
    """The whole body, its bytes counted against ``budget`` as they arrive and until the block ends. ``share``: the
    part of the budget that bodies held in all may fill before this one is refused (bodies whose sender is not yet
    known take less than all of it, so they cannot starve those of authenticated clients).

    Raises BodyRefused before reading when the declared length is over ``limit`` or could not fit in the budget
    now (nothing is reserved: the check only spares a client sending what would be refused), and while reading when
    the body outgrows either, falls behind ``grace + received / min_rate`` seconds, or pauses for ``MAX_GAP``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyRefused("too_large", f"request body is larger than {limit} bytes")
    if declared is not None and not budget.fits(declared, share):
        raise BodyRefused("busy", BUSY)
    held = [0]  # bytes taken from the budget so far
    try:
        grace = GRACE if grace is None else grace
        yield await _read(request, limit, budget, share, grace, min_rate or MIN_RATE, held)
    finally:
        budget.give(held[0])


async def _read(
    request: Request, limit: int, budget: BodyBudget, share: float, grace: float, min_rate: float, held: list[int]
) -> bytes:
    loop = asyncio.get_running_loop()
    start = last = loop.time()
    parts: list[bytes] = []
    total = 0
    pieces = request.iter_body()
    try:
        while True:
            # Each piece is awaited in a task of its own: cancelling granian's body read takes effect only when the
            # next bytes arrive, and a client that sends none must still get its answer at the deadline.
            step = asyncio.ensure_future(anext(pieces))
            paused = last + MAX_GAP < start + grace + total / min_rate  # which deadline comes first
            deadline = last + MAX_GAP if paused else start + grace + total / min_rate
            done, _ = await asyncio.wait((step,), timeout=max(0.0, deadline - loop.time()))
            if not done:
                step.cancel()
                raise BodyRefused("slow", _too_slow(total, loop.time() - start, paused, grace, min_rate))
            try:
                data = step.result()
            except StopAsyncIteration:
                break
            last = loop.time()
            total += len(data)
            if total > limit:
                raise BodyRefused("too_large", f"request body is larger than {limit} bytes")
            if not budget.take(len(data), share):
                raise BodyRefused("busy", BUSY)
            held[0] += len(data)
            parts.append(data)
    except BodyInterrupted as exc:
        raise BodyRefused("interrupted", f"the request body was cut off after {total} bytes: {exc}") from None
    return b"".join(parts)


def _too_slow(total: int, elapsed: float, paused: bool, grace: float, min_rate: float) -> str:
    if paused:
        return f"no byte of the request body arrived for {MAX_GAP:.0f} s ({total} bytes in {elapsed:.0f} s)"
    return (
        f"the request body arrived too slowly ({total} bytes in {elapsed:.0f} s; at least "
        f"{min_rate / 1024:.0f} KiB/s after the first {grace:.0f} s)"
    )
