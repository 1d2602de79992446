"""blob_copies: a blob's content under a customer key (KMS, KMS_DSSE repositories), one per digest and keyspace;
uploads.keyspace and uploads.wrapped_key: the key an upload to such a repository is sealed under

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06 20:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_copies",
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("keyspace", sa.String(length=64), nullable=False),
        sa.Column("seal_id", sa.String(length=32), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(["digest"], ["blobs.digest"], name=op.f("fk_blob_copies_digest_blobs")),
        sa.PrimaryKeyConstraint("digest", "keyspace", name=op.f("pk_blob_copies")),
    )
    with op.batch_alter_table("blob_copies") as batch:
        batch.create_index(batch.f("ix_blob_copies_keyspace"), ["keyspace"], unique=False)
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("keyspace", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("wrapped_key", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("wrapped_key")
        batch.drop_column("keyspace")
    op.drop_table("blob_copies")
