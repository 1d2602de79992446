"""initial registry schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 15:55:28.165303
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_blobs")),
    )
    op.create_table(
        "repositories",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("tag_mutability", sa.String(length=32), server_default="MUTABLE", nullable=False),
        sa.Column("tag_mutability_filters", sa.Text(), nullable=True),
        sa.Column("scan_on_push", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("encryption_type", sa.String(length=16), server_default="AES256", nullable=False),
        sa.Column("kms_key", sa.String(length=2048), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repositories")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_repositories_account_id_name")),
    )
    op.create_table(
        "manifests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("artifact_type", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("image_size", sa.BigInteger(), nullable=False),
        sa.Column("config_digest", sa.String(length=150), nullable=True),
        sa.Column("subject_digest", sa.String(length=150), nullable=True),
        sa.Column("annotations", sa.Text(), nullable=True),
        sa.Column("pushed_at", sa.Float(precision=53), nullable=False),
        sa.Column("last_pulled_at", sa.Float(precision=53), nullable=True),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_manifests_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifests")),
        sa.UniqueConstraint("repository_id", "digest", name=op.f("uq_manifests_repository_id_digest")),
    )
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_manifests_repository_id_subject_digest"),
            ["repository_id", "subject_digest"],
            unique=False,
        )

    op.create_table(
        "repository_blobs",
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(["digest"], ["blobs.digest"], name=op.f("fk_repository_blobs_digest_blobs")),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_repository_blobs_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", "digest", name=op.f("pk_repository_blobs")),
    )
    with op.batch_alter_table("repository_blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_repository_blobs_digest"), ["digest"], unique=False)

    op.create_table(
        "uploads",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("size", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_uploads_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_uploads_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "manifest_blobs",
        sa.Column("manifest_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.ForeignKeyConstraint(["digest"], ["blobs.digest"], name=op.f("fk_manifest_blobs_digest_blobs")),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifests.id"],
            name=op.f("fk_manifest_blobs_manifest_id_manifests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("manifest_id", "digest", name=op.f("pk_manifest_blobs")),
    )
    with op.batch_alter_table("manifest_blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_manifest_blobs_digest"), ["digest"], unique=False)

    op.create_table(
        "manifest_children",
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("child_digest", sa.String(length=150), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["manifests.id"],
            name=op.f("fk_manifest_children_parent_id_manifests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("parent_id", "child_digest", name=op.f("pk_manifest_children")),
    )
    with op.batch_alter_table("manifest_children", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_manifest_children_child_digest"), ["child_digest"], unique=False)

    op.create_table(
        "tags",
        sa.Column("repository_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("manifest_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["manifest_id"], ["manifests.id"], name=op.f("fk_tags_manifest_id_manifests"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_tags_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", "name", name=op.f("pk_tags")),
    )
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tags_manifest_id"), ["manifest_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tags_manifest_id"))

    op.drop_table("tags")
    with op.batch_alter_table("manifest_children", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manifest_children_child_digest"))

    op.drop_table("manifest_children")
    with op.batch_alter_table("manifest_blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manifest_blobs_digest"))

    op.drop_table("manifest_blobs")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_uploads_updated_at"))

    op.drop_table("uploads")
    with op.batch_alter_table("repository_blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repository_blobs_digest"))

    op.drop_table("repository_blobs")
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manifests_repository_id_subject_digest"))

    op.drop_table("manifests")
    op.drop_table("repositories")
    op.drop_table("blobs")
