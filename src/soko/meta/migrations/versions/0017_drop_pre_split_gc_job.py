"""drop the pre-split gc job row: GC runs as gc_review, gc_blobs and gc_sweep now, and nothing runs kind "gc", so
its row would show in soko jobs and /metrics forever (with an ever-growing lag)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 06:25:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM jobs WHERE kind = 'gc' AND key = ''"))


def downgrade() -> None:
    pass  # an older version's runner inserts its row again on start
