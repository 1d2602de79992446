"""keyspace_keys: the KMS-wrapped key a customer-key keyspace's manifests are sealed under (KMS and KMS_DSSE
repositories' manifests under their own key, not the service key)

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-07 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyspace_keys",
        sa.Column("keyspace", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("keyspace", name=op.f("pk_keyspace_keys")),
    )


def downgrade() -> None:
    op.drop_table("keyspace_keys")
