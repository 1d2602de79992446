"""ECR managed signing: signing configurations, the signing authority and keys Soko manages, image signing status

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "signing_configurations",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_signing_configurations")),
    )
    op.create_table(
        "signing_authorities",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_signing_authorities")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("profile_arn", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("account_id", "profile_arn", "version",
                            name=op.f("uq_signing_keys_account_id_profile_arn_version")),
    )
    op.create_table(
        "image_signing_status",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("repository_id", Id, nullable=False),
        sa.Column("manifest_digest", sa.String(length=150), nullable=False),
        sa.Column("profile_arn", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("signature_digest", sa.String(length=150), nullable=True),
        sa.Column("requested_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"],
                                name=op.f("fk_image_signing_status_repository_id_repositories"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_signing_status")),
        sa.UniqueConstraint("repository_id", "manifest_digest", "profile_arn",
                            name=op.f("uq_image_signing_status_repository_id_manifest_digest_profile_arn")),
    )


def downgrade() -> None:
    op.drop_table("image_signing_status")
    op.drop_table("signing_keys")
    op.drop_table("signing_authorities")
    op.drop_table("signing_configurations")
