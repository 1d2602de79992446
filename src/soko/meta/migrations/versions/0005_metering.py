"""metering

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 16:18:22.061416
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfer_usage",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("repository_name", sa.String(length=256), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("network", sa.String(length=16), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("requests", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "repository_name", "endpoint", "network", "operation", "day", name=op.f("pk_transfer_usage")
        ),
    )
    with op.batch_alter_table("transfer_usage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transfer_usage_day"), ["day"], unique=False)

    op.create_table(
        "usage_samples",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("repository_name", sa.String(length=256), nullable=False),
        sa.Column("slot_start", sa.BigInteger(), nullable=False),
        sa.Column("slot_seconds", sa.Integer(), nullable=False),
        sa.Column("logical_bytes", sa.BigInteger(), nullable=False),
        sa.Column("physical_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sampled_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "repository_name", "slot_start", name=op.f("pk_usage_samples")),
    )
    with op.batch_alter_table("usage_samples", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_samples_slot_start"), ["slot_start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_samples_slot_start"))

    op.drop_table("usage_samples")
    with op.batch_alter_table("transfer_usage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_usage_day"))

    op.drop_table("transfer_usage")
