"""ECR's replication backfills (StartReplicationBackfill and the operations around it): one row per backfill and
one item per image it asked to replicate

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-06 21:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replication_backfills",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("dest_region", sa.String(32), nullable=False),
        sa.Column("dest_registry", sa.String(12), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_code", sa.Text, nullable=True),
        sa.Column("started_at", sa.Float(precision=53), nullable=False),
        sa.Column("ended_at", sa.Float(precision=53), nullable=True),
    )
    op.create_index("ix_replication_backfills_account", "replication_backfills", ["account_id", "started_at"])
    op.create_table(
        "replication_backfill_items",
        sa.Column(
            "backfill_id",
            sa.String(36),
            sa.ForeignKey("replication_backfills.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("repository", sa.String(256), primary_key=True),
        sa.Column("digest", sa.String(150), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("replication_backfill_items")
    op.drop_index("ix_replication_backfills_account", "replication_backfills")
    op.drop_table("replication_backfills")
