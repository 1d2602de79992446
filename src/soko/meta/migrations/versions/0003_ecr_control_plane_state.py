"""ecr control plane state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 16:10:17.813322
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "creation_templates",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("prefix", sa.String(length=256), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=True),
        sa.Column("applied_for", sa.Text(), nullable=False),
        sa.Column("encryption_type", sa.String(length=16), server_default="AES256", nullable=False),
        sa.Column("kms_key", sa.String(length=2048), nullable=True),
        sa.Column("resource_tags", sa.Text(), nullable=True),
        sa.Column("tag_mutability", sa.String(length=32), server_default="MUTABLE", nullable=False),
        sa.Column("tag_mutability_filters", sa.Text(), nullable=True),
        sa.Column("repository_policy", sa.Text(), nullable=True),
        sa.Column("lifecycle_policy", sa.Text(), nullable=True),
        sa.Column("custom_role_arn", sa.String(length=2048), nullable=True),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "prefix", name=op.f("pk_creation_templates")),
    )
    op.create_table(
        "replication_configurations",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_replication_configurations")),
    )
    op.create_table(
        "scanning_configurations",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("scan_type", sa.String(length=16), server_default="BASIC", nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_scanning_configurations")),
    )
    op.create_table(
        "lifecycle_policies",
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("policy_text", sa.Text(), nullable=False),
        sa.Column("last_evaluated_at", sa.Float(precision=53), nullable=True),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_lifecycle_policies_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", name=op.f("pk_lifecycle_policies")),
    )
    op.create_table(
        "lifecycle_previews",
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("policy_text", sa.Text(), nullable=False),
        sa.Column("results", sa.Text(), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_lifecycle_previews_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", name=op.f("pk_lifecycle_previews")),
    )
    op.create_table(
        "repository_tags",
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_repository_tags_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", "key", name=op.f("pk_repository_tags")),
    )


def downgrade() -> None:
    op.drop_table("repository_tags")
    op.drop_table("lifecycle_previews")
    op.drop_table("lifecycle_policies")
    op.drop_table("scanning_configurations")
    op.drop_table("replication_configurations")
    op.drop_table("creation_templates")
