"""Retention of the events outbox.

Until a delivery worker drains it (events and webhooks, a later issue), nothing consumes the outbox, and every push
adds a row. ``prune`` keeps the last ``event_retention`` of events (default 7 days, as a reader catching up would
need) so the table cannot grow without bound; it deletes in bounded batches so no transaction holds many locks.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.kernel.context import DomainContext
from soko.meta.schema import event_outbox

BATCH = 5000


def prune(ctx: DomainContext, retention: float) -> int:
    """Delete events older than ``retention`` seconds; returns how many (0 when retention is 0: keep all)."""
    if retention <= 0:
        return 0
    cutoff = ctx.clock() - retention
    removed = 0
    while True:
        with ctx.db.write() as conn:
            ids = (
                conn.execute(
                    sa.select(event_outbox.c.id)
                    .where(event_outbox.c.created_at < cutoff)
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
