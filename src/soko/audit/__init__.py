"""The audit log: authentication and authorization decisions (and later lifecycle expiries) in the metadata store.

Recording must not cost a write transaction per request, so events are queued in memory and written in batches
about once a second (and at shutdown); at most the last second is lost if the process is killed. Identical allow
decisions (same principal, action, resource, source and endpoint) within one window become one row with a count,
so a busy pull path costs a dictionary update, not a row per request; every denial keeps its own row. A
"challenge" is the anonymous first request every registry client makes before it logs in (answered 401 with
WWW-Authenticate): merged like allows, and left out of queries unless asked for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import sqlalchemy as sa

from soko.access import RequestContext
from soko.meta.schema import audit_events
from soko.registry.context import DomainContext


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None = None
    principal: str | None = None
    decision: str | None = None  # allow | deny | challenge; None: allows and denials
    limit: int = 1000


class AuditLog:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self._pending: list[dict] = []
        self._allows: dict[tuple, dict] = {}
        self._lock = threading.Lock()

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
        merge = decision != "deny"
        if merge:
            key = (event, principal, action, resource, decision, source_ip, endpoint)
            with self._lock:
                merged = self._allows.get(key)
                if merged is not None:
                    merged["count"] += 1
                    return
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
        with self._lock:
            self._pending.append(row)
            if merge:
                self._allows[key] = row
            if len(self._pending) > 100_000:  # never grow without bound if the database is down
                del self._pending[:50_000]
                self._allows.clear()

    def flush(self) -> int:
        with self._lock:
            pending, self._pending, self._allows = self._pending, [], {}
        if pending:
            with self.ctx.db.write() as conn:
                conn.execute(sa.insert(audit_events), pending)
        return len(pending)

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
