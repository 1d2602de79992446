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
    until: float | None = None  # before this time
    action: str | None = None
    resource: str | None = None
    account: str | None = None  # rows whose principal or resource is of this account (the console's scope)
    before: tuple[float, int] | None = None  # keyset position: rows older than this (at, id), for the next page


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

        def row() -> dict:
            return {
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

        # Allows (and challenges) repeated within one batch are one row with a count; every denial keeps its own.
        # The batcher builds the row only for a key not yet waiting (else it adds one to the count) in one step, so a
        # flush in between can never leave a partial row behind — and a repeated allow costs no row and no request id.
        if decision != "deny":
            key: tuple = (event, principal, action, resource, decision, source_ip, endpoint)
            self._batch.bump(key, row, _ONE)
        else:
            self._batch.add(("deny", next(self._unique)), row())

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
        if q.until is not None:
            stmt = stmt.where(audit_events.c.at < q.until)
        if q.action:
            stmt = stmt.where(audit_events.c.action == q.action)
        if q.resource:
            stmt = stmt.where(audit_events.c.resource == q.resource)
        if q.account:
            if not q.account.isdigit():
                raise ValueError("an account id is digits")
            # arn:aws:iam::<account>:… and arn:aws:sts::<account>:… principals; arn:aws:ecr:<region>:<account>:…
            stmt = stmt.where(
                sa.or_(
                    audit_events.c.principal.like(f"arn:aws:%::{q.account}:%"),
                    audit_events.c.resource.like(f"arn:aws:%:%:{q.account}:%"),
                )
            )
        if q.before is not None:
            at, row_id = q.before
            stmt = stmt.where(
                sa.or_(audit_events.c.at < at, sa.and_(audit_events.c.at == at, audit_events.c.id < row_id))
            )
        with self.ctx.db.read() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]


_ONE = {"count": 1}  # what one more identical decision adds to a waiting row


def _merge_rows(old: dict, new: dict) -> dict:
    """The first row stands for both: its time, request id and reason; the counts add up. (Rows waiting in the batch
    belong to it alone, so the count is added in place.)"""
    old["count"] += new["count"]
    return old
