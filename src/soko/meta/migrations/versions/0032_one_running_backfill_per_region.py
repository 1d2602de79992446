"""One running replication backfill per account and destination region (ECR's ReplicationBackfillInProgress), now in
the schema: two concurrent StartReplicationBackfill calls could both start one on PostgreSQL. Of the running ones such
a race left, the oldest goes on and the others are STOPPED (what they had requested still replicates, as after a
StopReplicationBackfill).

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-07 00:05:00
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

RUNNING = "status IN ('PREPARING', 'IN_PROGRESS')"


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            f"SELECT id, account_id, dest_region FROM replication_backfills WHERE {RUNNING} ORDER BY started_at, id"
        )
    ).all()
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if (row.account_id, row.dest_region) in seen:
            conn.execute(
                sa.text("UPDATE replication_backfills SET status = 'STOPPED', ended_at = :now WHERE id = :id"),
                {"now": time.time(), "id": row.id},
            )
        seen.add((row.account_id, row.dest_region))
    op.create_index(
        "ux_replication_backfills_running",
        "replication_backfills",
        ["account_id", "dest_region"],
        unique=True,
        sqlite_where=sa.text(RUNNING),
        postgresql_where=sa.text(RUNNING),
    )


def downgrade() -> None:
    op.drop_index("ux_replication_backfills_running", "replication_backfills")
