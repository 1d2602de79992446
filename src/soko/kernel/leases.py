"""Leases on database rows (jobs, GC tombstones): who may take a row that someone else may be holding."""

from __future__ import annotations

import sqlalchemy as sa

from soko import process_identity


def lease_is_free(conn: sa.Connection, owner: sa.Column, until: sa.Column, now: float) -> sa.ColumnElement[bool]:
    """A condition for rows nobody holds: no lease, a lapsed one, or one taken by a process of this node that died
    (kill -9 mid-batch: its leases are void at once instead of when they lapse; other nodes' holders are judged by
    the lapse alone, as ``process_identity`` explains)."""
    holders = conn.execute(sa.select(owner).where(until >= now).distinct()).scalars()
    dead = [holder for holder in holders if process_identity.holder_is_dead(holder)]
    return sa.or_(until.is_(None), until < now, owner.in_(dead))
