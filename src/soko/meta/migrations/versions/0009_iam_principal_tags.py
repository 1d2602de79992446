"""IAM user and role tags (aws:PrincipalTag, aws:ResourceTag on IAM users and roles)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iam_tags",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("principal_type", sa.String(length=8), nullable=False),
        sa.Column("principal_name", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "principal_type", "principal_name", "key"),
    )


def downgrade() -> None:
    op.drop_table("iam_tags")
