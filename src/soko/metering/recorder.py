"""Transfer and request counting on the request path: a dict update under a lock, flushed to the DB in batches
(``soko.batcher.Batcher``: a failed write keeps the counts for the next flush)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from soko.access import RequestContext
from soko.batcher import Batcher
from soko.meta import Database
from soko.meta.schema import transfer_usage

# Operations counted (the request path names them; reports list them in this order).
OPERATIONS = ("manifest_get", "manifest_head", "manifest_put", "blob_get", "blob_head")
INTERNET, SAME_REGION, PRIVATE = "internet", "same-region", "private"
NETWORKS = (INTERNET, SAME_REGION, PRIVATE)
_EPOCH = date(1970, 1, 1)
_SOURCE_CACHE_LIMIT = 10_000

# (account, repository, endpoint, network, operation, epoch day) → (bytes out, requests)
Key = tuple[str, str, str, str, str, int]


def _add(old: tuple[int, int], new: tuple[int, int]) -> tuple[int, int]:
    return old[0] + new[0], old[1] + new[1]


def epoch_day(day: int) -> date:
    return _EPOCH + timedelta(days=day)


class TransferRecorder:
    def __init__(self, db: Database, clock: Callable[[], float], same_region_cidrs: list[str]) -> None:
        self.db = db
        self.clock = clock
        self.same_region = [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in same_region_cidrs]
        # The write is looked up at flush time (tests replace it to simulate a failing database).
        self._batch: Batcher[Key, tuple[int, int]] = Batcher("transfers", lambda batch: self._write(batch), _add)
        self._sources: dict[str, bool] = {}

    def record(self, context: RequestContext, account_id: str, repository: str, nbytes: int, operation: str) -> None:
        endpoint = context.endpoint
        if endpoint != "public":
            network = PRIVATE
        elif self.same_region and self._is_same_region(context.source_ip):
            network = SAME_REGION
        else:
            network = INTERNET
        key = (account_id, repository, endpoint, network, operation, int(self.clock() // 86400))
        self._batch.add(key, (nbytes, 1))

    def _is_same_region(self, source_ip: str) -> bool:
        known = self._sources.get(source_ip)
        if known is None:
            try:
                address = ipaddress.ip_address(source_ip)
                known = any(address in network for network in self.same_region)
            except ValueError:
                known = False
            if len(self._sources) >= _SOURCE_CACHE_LIMIT:
                self._sources.clear()
            self._sources[source_ip] = known
        return known

    def pending(self) -> dict[Key, tuple[int, int]]:
        return self._batch.snapshot()

    def consistent(self) -> contextlib.AbstractContextManager[None]:
        """Hold off flushes: the database and ``pending()`` read inside add up to every request exactly once."""
        return self._batch.holding_flushes()

    def flush(self) -> int:
        """Add this process's counts to ``transfer_usage``; on failure they stay pending for the next flush."""
        return self._batch.flush()

    def _write(self, batch: dict[Key, tuple[int, int]]) -> None:
        stmt = (sqlite if self.db.is_sqlite else postgresql).insert(transfer_usage)
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "repository_name", "endpoint", "network", "operation", "day"],
            set_={
                "bytes_out": transfer_usage.c.bytes_out + stmt.excluded.bytes_out,
                "requests": transfer_usage.c.requests + stmt.excluded.requests,
            },
        )
        # Sorted keys: concurrent flushers from several processes lock rows in the same order (no deadlocks).
        rows = [
            {
                "account_id": key[0],
                "repository_name": key[1],
                "endpoint": key[2],
                "network": key[3],
                "operation": key[4],
                "day": epoch_day(key[5]),
                "bytes_out": cell[0],
                "requests": cell[1],
            }
            for key, cell in sorted(batch.items())
        ]
        with self.db.write() as conn:
            conn.execute(stmt, rows)


def transfer_rows(conn: sa.Connection, account_id: str | None = None, days: tuple[date, date] | None = None):
    """Σ bytes and requests per (account, repository, endpoint, network, operation) over [first, last) days."""
    t = transfer_usage.c
    query = sa.select(
        t.account_id,
        t.repository_name,
        t.endpoint,
        t.network,
        t.operation,
        sa.func.sum(t.bytes_out).label("bytes_out"),
        sa.func.sum(t.requests).label("requests"),
    ).group_by(t.account_id, t.repository_name, t.endpoint, t.network, t.operation)
    if account_id is not None:
        query = query.where(t.account_id == account_id)
    if days is not None:
        query = query.where(t.day >= days[0], t.day < days[1])
    return [
        (r.account_id, r.repository_name, r.endpoint, r.network, r.operation, int(r.bytes_out), int(r.requests))
        for r in conn.execute(query)
    ]
