"""blobs.seal_id: which encrypted object holds a blob's content (soko.crypto), so another object's ciphertext (or
plaintext) put in its place is refused on read; NULL for plaintext written by earlier versions

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 18:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("seal_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("seal_id")
