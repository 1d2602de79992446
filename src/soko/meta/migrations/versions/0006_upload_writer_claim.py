"""upload writer claim

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 19:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("writer", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("writer_seen", sa.Float(precision=53), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("writer_seen")
        batch.drop_column("writer")
