"""The audit log: authentication and authorization decisions in the metadata store (lifecycle expiries are written
by their own unit of work, ``soko.kernel.unit_of_work``).

Recording must not cost a write transaction per request, so events are queued in memory and written in batches
about once a second (and at shutdown) through ``soko.batcher``: a failed write keeps the batch for the next flush
(bounded; drops are counted), and at most the last second is lost if the process is killed. Identical allow
decisions (same principal, action, resource, source and endpoint) within one window become one row with a count,
so a busy pull path costs a dictionary update, not a row per request; every denial keeps its own row. A
"challenge" is the anonymous first request every registry client makes before it logs in (answered 401 with
WWW-Authenticate): merged like allows, and left out of queries unless asked for.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sqlalchemy as sa

from soko.access import RequestContext
from soko.batcher import Batcher
from soko.kernel.context import DomainContext
from soko.meta.schema import audit_events


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None = None
    principal: str | None = None
    decision: str | None = None  # allow | deny | challenge; None: allows and denials
    limit: int = 1000


class AuditLog:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self._batch: Batcher[tuple, dict] = Batcher("audit", self._write, _merge_rows)
        self._unique = itertools.count()

    def record(
        self,
        event: str,
        principal: str | None,
        action: str | None,
        resource: str | None,
        decision: str,
        reason: str | None,
        context: RequestContext | None,
    ) -> None:
        source_ip = context.source_ip if context else None
        endpoint = context.endpoint if context else None
        # Allows (and challenges) repeated within one batch are one row with a count; every denial keeps its own.
        # Always a whole row: the batcher merges it into one already waiting (counts add up) in one step, so a flush
        # between a lookup and an add can never leave a partial row behind.
        if decision != "deny":
            key: tuple = (event, principal, action, resource, decision, source_ip, endpoint)
        else:
            key = ("deny", next(self._unique))
        row = {
            "at": self.ctx.clock(),
            "event": event,
            "principal": principal,
            "action": action,
            "resource": resource,
            "decision": decision,
            "reason": (reason or "")[:1024],
            "source_ip": source_ip,
            "endpoint": endpoint,
            "request_id": context.request_id if context else None,
            "count": 1,
        }
        self._batch.add(key, row)

    def flush(self) -> int:
        """Write the waiting rows; if the database fails they wait for the next flush (``soko.batcher``)."""
        return self._batch.flush()

    def _write(self, batch: dict[tuple, dict]) -> None:
        with self.ctx.db.write() as conn:
            conn.execute(sa.insert(audit_events), list(batch.values()))

    def query(self, q: AuditQuery) -> list[dict]:
        stmt = sa.select(audit_events).order_by(audit_events.c.at.desc(), audit_events.c.id.desc()).limit(q.limit)
        if q.since is not None:
            stmt = stmt.where(audit_events.c.at >= q.since)
        if q.principal:
            stmt = stmt.where(audit_events.c.principal == q.principal)
        if q.decision:
            stmt = stmt.where(audit_events.c.decision == q.decision)
        else:
            stmt = stmt.where(audit_events.c.decision != "challenge")
        with self.ctx.db.read() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]


def _merge_rows(old: dict, new: dict) -> dict:
    """The first row stands for both: its time, request id and reason; the counts add up."""
    return {**old, "count": old["count"] + new["count"]}
