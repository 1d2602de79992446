"""uploads.short_part_end: where the first part under ECR's 5 MiB minimum ended, so CompleteLayerUpload can refuse an
upload whose short part was not its last (LayerPartTooSmallException)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 05:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("short_part_end", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("short_part_end")
