"""gc link review queue

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 16:13:02.428484
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gc_link_reviews",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("queued_at", sa.Float(precision=53), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gc_link_reviews")),
    )
    with op.batch_alter_table("gc_link_reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gc_link_reviews_queued_at"), ["queued_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_gc_link_reviews_repository_id_digest"), ["repository_id", "digest"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("gc_link_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gc_link_reviews_repository_id_digest"))
        batch_op.drop_index(batch_op.f("ix_gc_link_reviews_queued_at"))

    op.drop_table("gc_link_reviews")
