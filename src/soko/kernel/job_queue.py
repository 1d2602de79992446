"""Queueing a one-shot job in the caller's transaction. Here, below every domain package, so the domain can queue a
job (a scan, a lifecycle preview) without importing ``soko.jobs``, which composes the domain's jobs."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema import jobs


def enqueue(db, conn: sa.Connection, kind: str, key: str, now: float) -> None:
    """Make job ``kind``/``key`` due now, in the caller's transaction (a one-shot job of a keyed kind, e.g. a scan):
    it runs once the transaction commits, on whichever process takes it first, and again if that process dies."""
    conn.execute(db.insert_ignore(jobs).values(kind=kind, key=key, next_run=now))
    conn.execute(sa.update(jobs).where(jobs.c.kind == kind, jobs.c.key == key).values(next_run=now, attempts=0))


def forget(conn: sa.Connection, kind: str, key: str) -> None:
    """Drop one-shot job ``kind``/``key`` in the caller's transaction (its work is done: it must not run again)."""
    conn.execute(sa.delete(jobs).where(jobs.c.kind == kind, jobs.c.key == key))


def attempts(conn: sa.Connection, kind: str, key: str) -> int:
    """How many runs of job ``kind``/``key`` failed in a row (0 for a job that has no row)."""
    return conn.execute(sa.select(jobs.c.attempts).where(jobs.c.kind == kind, jobs.c.key == key)).scalar() or 0
