"""The archive storage class (issue 18): each image's status (ACTIVE, ARCHIVED, ACTIVATING) and when it was last
archived and activated; each blob's tier (NULL: standard storage; 'archive': the archive store, at archive_path) and
when it went there; archived bytes in the GB-month samples; and the charges of ECR's 90-day minimum archive storage
duration for images deleted or restored sooner

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06 20:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("manifests") as batch:
        batch.add_column(sa.Column("image_status", sa.String(16), nullable=False, server_default="ACTIVE"))
        batch.add_column(sa.Column("last_archived_at", sa.Float(precision=53), nullable=True))
        batch.add_column(sa.Column("last_activated_at", sa.Float(precision=53), nullable=True))
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("tier", sa.String(16), nullable=True))
        batch.add_column(sa.Column("archive_path", sa.String(300), nullable=True))
        batch.add_column(sa.Column("archived_at", sa.Float(precision=53), nullable=True))
    with op.batch_alter_table("usage_samples") as batch:
        batch.add_column(sa.Column("archive_logical_bytes", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("archive_physical_bytes", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "archive_charges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("repository_name", sa.String(256), nullable=False),
        sa.Column("image_digest", sa.String(150), nullable=False),
        sa.Column("byte_seconds", sa.BigInteger, nullable=False),
        sa.Column("charged_at", sa.Float(precision=53), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
    )
    op.create_index("ix_archive_charges_charged_at", "archive_charges", ["charged_at"])


def downgrade() -> None:
    op.drop_index("ix_archive_charges_charged_at", "archive_charges")
    op.drop_table("archive_charges")
    with op.batch_alter_table("usage_samples") as batch:
        batch.drop_column("archive_physical_bytes")
        batch.drop_column("archive_logical_bytes")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("archive_path")
        batch.drop_column("tier")
    with op.batch_alter_table("manifests") as batch:
        batch.drop_column("last_activated_at")
        batch.drop_column("last_archived_at")
        batch.drop_column("image_status")
