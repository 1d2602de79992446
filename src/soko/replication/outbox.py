"""The outbox reader: turns the push events the unit of work wrote (``event_outbox``) into replication requests.

It runs as the periodic ``replication_outbox`` job (once per second, on one process of the cluster at a time). An
event is read once: its id is recorded in ``replication_outbox`` in the transaction that requests its replications,
so a crash between the two repeats neither nor loses either. Outbox ids are handed out before commit, so an event
may become visible after one with a higher id; the reader therefore looks at every unseen event above
``low_water`` (not only above the last id it read), and moves ``low_water`` up only over events older than
``SETTLED`` (no write transaction stays open that long), forgetting the ids below it.

The migration that added replication set the cursor at the newest event then: pushes from before replication
existed are not replicated (ECR replicates what is pushed after configuration; ``soko replication backfill`` copies
the rest).
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from soko.kernel.context import DomainContext
from soko.kernel.events import IMAGE_ACTION, REFERRER_ACTION
from soko.meta.schema import event_outbox, replication_cursor, replication_outbox
from soko.replication import store
from soko.replication.rules import destinations_for

CURSOR = "outbox"
BATCH = 500
SETTLED = 600.0  # seconds after which an event's transaction has surely ended (committed or rolled back)


class OutboxReader:
    def __init__(self, ctx: DomainContext, rules_of) -> None:
        self.ctx = ctx
        self.rules_of = rules_of  # account id -> (that account's replication rules, when they were put)

    def _low_water(self) -> int | None:
        with self.ctx.db.read() as conn:
            return conn.execute(
                sa.select(replication_cursor.c.low_water).where(replication_cursor.c.name == CURSOR)
            ).scalar()

    def _start(self) -> int:
        """The cursor's row (the migration that made the table wrote it at the newest event then; a database made
        since holds no older events)."""
        with self.ctx.write() as conn:
            conn.execute(self.ctx.db.insert_ignore(replication_cursor).values(name=CURSOR, low_water=0))
            return conn.execute(
                sa.select(replication_cursor.c.low_water).where(replication_cursor.c.name == CURSOR)
            ).scalar_one()

    def _unseen(self, low: int):
        seen = sa.select(replication_outbox.c.event_id).where(replication_outbox.c.event_id == event_outbox.c.id)
        return sa.and_(
            event_outbox.c.id > low,
            event_outbox.c.detail_type.in_((IMAGE_ACTION, REFERRER_ACTION)),
            ~sa.exists(seen),
        )

    def read(self) -> int:
        """Handle the unseen push events (a batch at a time); returns how many replications were requested."""
        low = self._low_water()
        if low is None:
            low = self._start()
        requested = 0
        while True:
            with self.ctx.db.read() as conn:
                rows = conn.execute(
                    sa.select(
                        event_outbox.c.id, event_outbox.c.account_id, event_outbox.c.created_at, event_outbox.c.body
                    )
                    .where(self._unseen(low))
                    .order_by(event_outbox.c.id)
                    .limit(BATCH)
                ).all()
            if not rows:
                break
            rules: dict[str, tuple[list[dict], float]] = {}
            with self.ctx.write() as conn:
                now = self.ctx.clock()
                for row in rows:
                    detail = json.loads(row.body).get("detail", {})
                    if detail.get("action-type") != "PUSH":
                        continue
                    if row.account_id not in rules:
                        rules[row.account_id] = self.rules_of(row.account_id)
                    account_rules, since = rules[row.account_id]
                    if row.created_at < since:
                        continue  # pushed before the rules were put (that is for a backfill)
                    repository, digest = detail["repository-name"], detail["image-digest"]
                    for dest in destinations_for(account_rules, repository):
                        store.request(self.ctx, conn, row.account_id, repository, digest, dest, now)
                        requested += 1
                conn.execute(sa.insert(replication_outbox), [{"event_id": row.id} for row in rows])
            if len(rows) < BATCH:
                break
        self._settle(low)
        return requested

    def _settle(self, low: int) -> None:
        """Move ``low_water`` over the settled events that were all seen, and forget their ids."""
        cutoff = self.ctx.clock() - SETTLED
        with self.ctx.write() as conn:
            settled = conn.execute(
                sa.select(sa.func.max(event_outbox.c.id)).where(
                    event_outbox.c.id > low, event_outbox.c.created_at < cutoff
                )
            ).scalar()
            if settled is None:
                return
            unseen = conn.execute(
                sa.select(sa.func.min(event_outbox.c.id)).where(self._unseen(low), event_outbox.c.id <= settled)
            ).scalar()
            new_low = settled if unseen is None else unseen - 1
            if new_low <= low:
                return
            conn.execute(
                sa.update(replication_cursor).where(replication_cursor.c.name == CURSOR).values(low_water=new_low)
            )
            conn.execute(sa.delete(replication_outbox).where(replication_outbox.c.event_id <= new_low))
