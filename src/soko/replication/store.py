"""Replication requests and their status (table ``replication_status``), and the one-shot ``replication`` job that
carries each out (``soko.kernel.job_queue``: queued in the transaction that requests it)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from soko.kernel import job_queue
from soko.kernel.context import DomainContext
from soko.meta.schema import replication_status as t
from soko.replication.rules import Destination

KIND = "replication"
IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"


@dataclass(frozen=True)
class Request:
    id: int
    account_id: str
    repository: str
    digest: str
    destination: Destination
    status: str
    failure_code: str | None
    requested: int


def _request(row: sa.Row) -> Request:
    return Request(
        row.id,
        row.account_id,
        row.repository,
        row.digest,
        Destination(row.dest_region, row.dest_registry),
        row.status,
        row.failure_code,
        row.requested,
    )


def request(
    ctx: DomainContext,
    conn: sa.Connection,
    account_id: str,
    repository: str,
    digest: str,
    dest: Destination,
    now: float,
) -> None:
    """Ask for ``digest`` of ``repository`` to reach ``dest`` (again): IN_PROGRESS, its job due now. Idempotent: a
    second request of a running copy makes it run once more when it ends (the tags may have moved meanwhile)."""
    key = {
        "account_id": account_id,
        "repository": repository,
        "digest": digest,
        "dest_region": dest.region,
        "dest_registry": dest.registry_id,
    }
    conn.execute(ctx.db.insert_ignore(t).values(**key, status=IN_PROGRESS, requested=0, created_at=now, updated_at=now))
    where = [t.c[k] == v for k, v in key.items()]
    conn.execute(
        sa.update(t)
        .where(*where)
        .values(status=IN_PROGRESS, failure_code=None, requested=t.c.requested + 1, updated_at=now)
    )
    row_id = conn.execute(sa.select(t.c.id).where(*where)).scalar_one()
    job_queue.enqueue(ctx.db, conn, KIND, str(row_id), now)


def get(ctx: DomainContext, row_id: int) -> Request | None:
    with ctx.db.read() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == row_id)).first()
    return _request(row) if row is not None else None


def statuses(ctx: DomainContext, account_id: str, repository: str, digest: str) -> list[Request]:
    with ctx.db.read() as conn:
        rows = conn.execute(
            sa.select(t)
            .where(t.c.account_id == account_id, t.c.repository == repository, t.c.digest == digest)
            .order_by(t.c.dest_region, t.c.dest_registry)
        ).all()
    return [_request(r) for r in rows]


def complete(ctx: DomainContext, req: Request, status: str, failure_code: str | None) -> bool:
    """Record the outcome of the run that started at ``req.requested`` and drop its job, unless a newer request
    came in meanwhile (False: run again)."""
    with ctx.write() as conn:
        done = conn.execute(
            sa.update(t)
            .where(t.c.id == req.id, t.c.requested == req.requested)
            .values(status=status, failure_code=failure_code, updated_at=ctx.clock())
        ).rowcount
        if done:
            job_queue.forget(conn, KIND, str(req.id))
    return bool(done)


def note_failure(ctx: DomainContext, req: Request, reason: str) -> int:
    """Keep why the last attempt failed (the status stays IN_PROGRESS: it is retried); returns the attempts failed
    in a row before this one."""
    with ctx.write() as conn:
        conn.execute(sa.update(t).where(t.c.id == req.id).values(failure_code=reason[:1000], updated_at=ctx.clock()))
        return job_queue.attempts(conn, KIND, str(req.id))

