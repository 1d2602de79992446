"""One replication backfill runs at a time per destination region (ECR: ReplicationBackfillInProgressException),
also when two StartReplicationBackfill calls race: the first is held inside its transaction right before its INSERT
while the second looks for a running one (the interleaving that let both start on PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema import replication_backfills
from soko.replication.backfills import RUNNING, Backfill, BackfillInProgress, Backfills
from soko.replication.rules import Destination
from soko.replication.service import Replicator
from tests.races import interleaved
from tests.replication.test_replication import DST, REGION, SRC, configure


def test_concurrent_starts_for_one_region_start_one_backfill(registry) -> None:
    configure(registry, DST)
    backfills = Backfills(Replicator(registry))
    outcomes: dict[str, Backfill | Exception] = {}

    def start(who: str) -> None:
        try:
            outcomes[who] = backfills.start(SRC, Destination(REGION, DST))
        except Exception as exc:  # the loser's answer
            outcomes[who] = exc

    interleaved(
        registry.ctx.db.engine, "INSERT INTO replication_backfills", lambda: start("first"), lambda: start("second")
    )
    won = [o for o in outcomes.values() if isinstance(o, Backfill)]
    lost = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], BackfillInProgress) and won[0].id in lost[0].message
    with registry.ctx.db.read() as conn:
        running = conn.execute(
            sa.select(replication_backfills.c.id).where(replication_backfills.c.status.in_(RUNNING))
        ).scalars()
        assert list(running) == [won[0].id]


def test_a_backfill_whose_replications_all_ended_does_not_block_the_next(registry) -> None:
    """Its COMPLETE status is set when someone looks; a start looks too, instead of refusing."""
    configure(registry, DST)
    backfills = Backfills(Replicator(registry))
    with registry.ctx.write() as conn:
        conn.execute(
            sa.insert(replication_backfills).values(
                id="ended", account_id=SRC, dest_region=REGION, dest_registry=DST, status="IN_PROGRESS", started_at=1.0
            )
        )  # no items: everything it asked for has ended
    started = backfills.start(SRC, Destination(REGION, DST))
    assert started.status in RUNNING
    assert backfills.get(SRC, "ended").status == "COMPLETE"


def test_the_migration_stops_all_but_the_oldest_of_raced_backfills(database_url) -> None:
    from alembic import command

    from soko.meta.db import Database, alembic_config

    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0031")
            for backfill_id, started in (("old", 1.0), ("raced", 2.0), ("elsewhere", 3.0)):
                region = "eu-west-1" if backfill_id == "elsewhere" else REGION
                conn.execute(
                    sa.text(
                        "INSERT INTO replication_backfills (id, account_id, dest_region, dest_registry, status, "
                        "started_at) VALUES (:id, :account, :region, :registry, 'IN_PROGRESS', :started)"
                    ),
                    {"id": backfill_id, "account": SRC, "region": region, "registry": DST, "started": started},
                )
        db.migrate()
        with db.engine.connect() as conn:
            statuses = dict(conn.execute(sa.text("SELECT id, status FROM replication_backfills")).all())
        assert statuses == {"old": "IN_PROGRESS", "raced": "STOPPED", "elsewhere": "IN_PROGRESS"}
    finally:
        db.dispose()
