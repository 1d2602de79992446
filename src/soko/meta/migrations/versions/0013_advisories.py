"""advisories

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "advisories",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("aliases", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("uri", sa.String(length=1024), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("cvss3_score", sa.Float(), nullable=True),
        sa.Column("cvss3_vector", sa.String(length=255), nullable=False),
        sa.Column("modified", sa.Float(precision=53), nullable=True),
        sa.Column("withdrawn", sa.Float(precision=53), nullable=True),
        sa.Column("imported_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_advisories")),
    )
    op.create_table(
        "advisory_packages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("advisory_id", sa.String(length=255), nullable=False),
        sa.Column("ecosystem", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("affected", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_advisory_packages")),
    )
    op.create_index(op.f("ix_advisory_packages_advisory_id"), "advisory_packages", ["advisory_id"])
    op.create_index("ix_advisory_packages_name_ecosystem", "advisory_packages", ["name", "ecosystem"])


def downgrade() -> None:
    op.drop_table("advisory_packages")
    op.drop_table("advisories")
