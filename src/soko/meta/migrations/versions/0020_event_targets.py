"""event targets (webhooks) and their dead letters

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 18:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "event_targets",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Float(precision=53), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_delivered_at", Timestamp, nullable=True),
        sa.Column("last_lag", sa.Float(precision=53), nullable=True),
        sa.Column("delivered", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failures", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_targets")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_event_targets_account_id_name")),
    )
    op.create_table(
        "event_dead_letters",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("target_id", Id, nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("dead_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["event_targets.id"],
            name=op.f("fk_event_dead_letters_target_id_event_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_dead_letters")),
        sa.UniqueConstraint("target_id", "event_id", name=op.f("uq_event_dead_letters_target_id_event_id")),
    )
    op.create_index("ix_event_dead_letters_status_next_attempt_at", "event_dead_letters", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_event_dead_letters_status_next_attempt_at", table_name="event_dead_letters")
    op.drop_table("event_dead_letters")
    op.drop_table("event_targets")
