"""replication: per-image, per-destination status (the replication job's key) and the outbox reader's progress

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 18:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "replication_status",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("dest_region", sa.String(length=32), nullable=False),
        sa.Column("dest_registry", sa.String(length=12), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.Text(), nullable=True),
        sa.Column("requested", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replication_status")),
        sa.UniqueConstraint("account_id", "repository", "digest", "dest_region", "dest_registry",
                            name="uq_replication_status_image"),
    )
    op.create_table(
        "replication_outbox",
        sa.Column("event_id", Id, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_replication_outbox")),
    )
    op.create_table(
        "replication_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("low_water", Id, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_replication_cursor")),
    )
    # Replication starts with the pushes after this upgrade (older ones are for `soko replication backfill`).
    op.execute(sa.text("INSERT INTO replication_cursor (name, low_water) "
                       "SELECT 'outbox', COALESCE(MAX(id), 0) FROM event_outbox"))


def downgrade() -> None:
    op.drop_table("replication_cursor")
    op.drop_table("replication_outbox")
    op.drop_table("replication_status")
