"""image_scans.scan_type: BASIC or ENHANCED, the kind of scan requested (which findings it stores and answers:
ECR's ``findings`` or ``enhancedFindings``)

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06 20:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("image_scans") as batch:
        batch.add_column(sa.Column("scan_type", sa.String(length=16), nullable=False, server_default="BASIC"))


def downgrade() -> None:
    with op.batch_alter_table("image_scans") as batch:
        batch.drop_column("scan_type")
