"""gc tombstones: storage deletions committed by the collector, carried out after the commit

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 05:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gc_tombstones",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("not_before", sa.Float(precision=53), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("claimed_until", sa.Float(precision=53), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gc_tombstones")),
    )
    with op.batch_alter_table("gc_tombstones", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gc_tombstones_not_before"), ["not_before"], unique=False)
        batch_op.create_index(batch_op.f("ix_gc_tombstones_digest"), ["digest"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gc_tombstones", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gc_tombstones_digest"))
        batch_op.drop_index(batch_op.f("ix_gc_tombstones_not_before"))
    op.drop_table("gc_tombstones")
