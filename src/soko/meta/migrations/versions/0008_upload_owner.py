"""uploads.owner: the principal that opened the session, for the cap on open sessions per principal and repository

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=2048), nullable=True))
        batch.create_index("ix_uploads_repository_id_owner", ["repository_id", "owner"])


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_index("ix_uploads_repository_id_owner")
        batch.drop_column("owner")
