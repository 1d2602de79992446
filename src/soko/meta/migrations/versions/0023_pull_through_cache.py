"""pull-through cache: rules, secrets (upstream credentials, encrypted), cached tags' last upstream check, manifests
waiting for their blobs, and blob fetch claims

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 18:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "pull_through_rules",
        sa.Column("account_id", sa.String(12), primary_key=True),
        sa.Column("prefix", sa.String(30), primary_key=True),
        sa.Column("upstream_registry_url", sa.String(512), nullable=False),
        sa.Column("upstream_registry", sa.String(64), nullable=True),
        sa.Column("upstream_repository_prefix", sa.String(256), nullable=False, server_default="ROOT"),
        sa.Column("credential_arn", sa.String(612), nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "secrets",
        sa.Column("arn", sa.String(2048), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("previous_version_id", sa.String(64), nullable=True),
        sa.Column("previous_value", sa.LargeBinary, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("deleted_at", Timestamp, nullable=True),
    )
    op.create_index("ix_secrets_account_name", "secrets", ["account_id", "name"])
    op.create_table(
        "pull_through_tags",
        sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(300), primary_key=True),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("checked_at", Timestamp, nullable=False),
    )
    op.create_table(
        "pull_through_pending",
        sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("tag", sa.String(300), nullable=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "pull_through_fetches",
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("heartbeat", Timestamp, nullable=False),
        sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    )


def downgrade() -> None:
    for table in ("pull_through_fetches", "pull_through_pending", "pull_through_tags"):
        op.drop_table(table)
    op.drop_index("ix_secrets_account_name", table_name="secrets")
    op.drop_table("secrets")
    op.drop_table("pull_through_rules")
