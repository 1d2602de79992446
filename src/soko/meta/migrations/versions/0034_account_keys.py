"""account_keys: per-account service keys (AES256), wrapped by the master key; blob_keys: each account's wrap of a
service-key object's key

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-06 23:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_keys",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "key_id", name=op.f("pk_account_keys")),
    )
    op.create_table(
        "blob_keys",
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(["digest"], ["blobs.digest"], name=op.f("fk_blob_keys_digest_blobs")),
        sa.PrimaryKeyConstraint("digest", "account_id", name=op.f("pk_blob_keys")),
    )
    with op.batch_alter_table("blob_keys") as batch:
        batch.create_index(batch.f("ix_blob_keys_account_id"), ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_table("blob_keys")
    op.drop_table("account_keys")
