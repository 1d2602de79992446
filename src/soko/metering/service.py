"""The ``Metering`` facade the registry composes (``registry.metering``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import date

from soko.access import RequestContext
from soko.kernel import DomainContext
from soko.metering import stored
from soko.metering.pricing import month_bounds
from soko.metering.recorder import TransferRecorder, transfer_rows

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

    def accrued_archive(
        self, year: int, month: int, account_id: str | None = None
    ) -> dict[tuple[str, str], tuple[int, int]]:
        start, end = month_bounds(year, month)
        with self.ctx.db.read() as conn:
            return stored.accrued_archive(conn, start, end, account_id)

    def transfers_in(self, year: int, month: int, account_id: str | None = None):
        first = date(year, month, 1)
        last = date(year + (month == 12), month % 12 + 1, 1)
        with self.ctx.db.read() as conn:
            return transfer_rows(conn, account_id, (first, last))

    def transfer_totals(self) -> list[tuple[str, str, str, str, str, int, int]]:
        """Every transfer count so far, this process's unflushed ones included (each request counted once):
        (account, repository, endpoint, network, operation, bytes, requests) rows, not summed over processes."""
        with self.transfers.consistent():
            with self.ctx.db.read() as conn:
                rows = transfer_rows(conn)
            rows += [(*key[:5], cell[0], cell[1]) for key, cell in self.transfers.pending().items()]
        return rows

    # -- background work (one set per serving process) --------------------------------------------------------

    def upkeep(self) -> list[Coroutine]:
        """Transfer-count flushes; storage samples are the leased ``metering`` job (``soko.jobs``)."""
        return [self._flush_loop()]

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await loop.run_in_executor(None, self.flush)
            except Exception:
                log.exception("could not record transfer counts; will retry")
