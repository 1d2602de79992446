"""image scans

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 06:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "image_scans",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("repository_id", Id, nullable=False),
        sa.Column("manifest_digest", sa.String(length=150), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.Float(precision=53), nullable=False),
        sa.Column("completed_at", sa.Float(precision=53), nullable=True),
        sa.Column("source_updated_at", sa.Float(precision=53), nullable=True),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"],
                                name=op.f("fk_image_scans_repository_id_repositories"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_scans")),
        sa.UniqueConstraint("repository_id", "manifest_digest",
                            name=op.f("uq_image_scans_repository_id_manifest_digest")),
    )


def downgrade() -> None:
    op.drop_table("image_scans")
