"""Retention of the events outbox.

Every push adds a row; ``soko.events`` delivers them to targets with a cursor each (``event_targets.position``).
``prune`` keeps the last ``event_retention`` of events (default 7 days) so the table cannot grow without bound, but
never an event an enabled target has yet to deliver; it deletes in bounded batches so no transaction holds many
locks.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.kernel.context import DomainContext
from soko.meta.schema import event_outbox, event_targets

BATCH = 5000


def prune(ctx: DomainContext, retention: float) -> int:
    """Delete events older than ``retention`` seconds; returns how many (0 when retention is 0: keep all)."""
    if retention <= 0:
        return 0
    cutoff = ctx.clock() - retention
    removed = 0
    while True:
        with ctx.db.write() as conn:
            pending = conn.execute(
                sa.select(sa.func.min(event_targets.c.position)).where(event_targets.c.enabled.is_(True))
            ).scalar()
            ids = (
                conn.execute(
                    sa.select(event_outbox.c.id)
                    .where(
                        event_outbox.c.created_at < cutoff,
                        event_outbox.c.id <= pending if pending is not None else sa.true(),
                    )
                    .order_by(event_outbox.c.id)
                    .limit(BATCH)
                )
                .scalars()
                .all()
            )
            if ids:
                conn.execute(sa.delete(event_outbox).where(event_outbox.c.id.in_(ids)))
        removed += len(ids)
        if len(ids) < BATCH:
            return removed
