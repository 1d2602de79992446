"""index manifests by digest alone (is the image still in any repository: an image's inventory goes with its last
manifest row), and delete the inventories of images no repository holds any more (they were never deleted before)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_manifests_digest", "manifests", ["digest"], unique=False)
    op.execute(sa.text("DELETE FROM image_inventories WHERE NOT EXISTS "
                       "(SELECT 1 FROM manifests WHERE manifests.digest = image_inventories.manifest_digest)"))


def downgrade() -> None:
    op.drop_index("ix_manifests_digest", table_name="manifests")
