"""The ``Metering`` facade the registry composes (``registry.metering``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from datetime import date
from typing import TYPE_CHECKING

from soko.access import RequestContext
from soko.metering import stored
from soko.metering.pricing import month_bounds
from soko.metering.recorder import TransferRecorder, transfer_rows

if TYPE_CHECKING:  # soko.registry composes Metering: no import cycle at runtime
    from soko.registry.context import DomainContext

log = logging.getLogger("soko.metering")
FLUSH_INTERVAL = 10.0  # seconds between flushes of the in-memory transfer counts


class Metering:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self.transfers = TransferRecorder(ctx.db, lambda: ctx.clock(), ctx.settings.same_region_cidrs)

    # -- request path ------------------------------------------------------------------------------------------

    def record_transfer(
        self, context: RequestContext, account_id: str, repository: str, nbytes: int, operation: str
    ) -> None:
        """Count one request and the body bytes it sent (in memory; about a microsecond, never a DB write)."""
        self.transfers.record(context, account_id, repository, nbytes, operation)

    def flush(self) -> int:
        return self.transfers.flush()

    # -- stored bytes and samples -----------------------------------------------------------------------------

    def stored(self, account_id: str | None = None) -> stored.StoredBytes:
        return stored.stored_bytes(self.ctx.db, account_id)

    @property
    def interval(self) -> int:
        return max(int(self.ctx.settings.metering_interval), 1)

    def sample(self, now: float | None = None) -> int:
        return stored.take_sample(self.ctx.db, self.ctx.clock() if now is None else now, self.interval)

    def accrued(self, year: int, month: int, account_id: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
        start, end = month_bounds(year, month)
        with self.ctx.db.read() as conn:
            return stored.accrued_byte_seconds(conn, start, end, account_id)

    def transfers_in(self, year: int, month: int, account_id: str | None = None):
        first = date(year, month, 1)
        last = date(year + (month == 12), month % 12 + 1, 1)
        with self.ctx.db.read() as conn:
            return transfer_rows(conn, account_id, (first, last))

    # -- background work (one set per serving process) --------------------------------------------------------

    def upkeep(self, track: Callable[[str], contextlib.AbstractContextManager] | None = None) -> list[Coroutine]:
        """``track(task)``: a context manager around each storage sample (run metrics)."""
        return [self._flush_loop(), self._sample_loop(track or (lambda _task: contextlib.nullcontext()))]

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await loop.run_in_executor(None, self.flush)
            except Exception:
                log.exception("could not record transfer counts; will retry")

    async def _sample_loop(self, track: Callable[[str], contextlib.AbstractContextManager]) -> None:
        loop = asyncio.get_running_loop()
        while self.ctx.settings.metering_interval > 0:
            try:
                with track("metering"):
                    await loop.run_in_executor(None, self.sample)
            except Exception:
                log.exception("could not sample stored bytes; will retry")
            interval = self.interval
            # Into the next slot, with jitter so that nodes do not all compute at the same instant.
            await asyncio.sleep(interval - self.ctx.clock() % interval + random.uniform(0, min(5.0, interval / 10)))
