"""upload claims name their process: the writer token grows from a uuid to <node>.<pid>.<start>.<random>

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("writer", type_=sa.String(length=128), existing_type=sa.String(length=36))


def downgrade() -> None:
    op.execute("UPDATE uploads SET writer = NULL, writer_seen = NULL")
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("writer", type_=sa.String(length=36), existing_type=sa.String(length=128))
