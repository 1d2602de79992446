"""Image inventories: the packages found in an image, keyed by its manifest digest (content-addressed, so one row
serves every repository holding the image). Scans match advisories against these rows; layers are read once."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Timestamp, metadata

image_inventories = sa.Table(
    "image_inventories",
    metadata,
    sa.Column("manifest_digest", sa.String(DIGEST_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),  # soko.scan.model.INVENTORY_VERSION that built it
    sa.Column("status", sa.String(32), nullable=False),  # COMPLETE | UNSUPPORTED_IMAGE | FAILED
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("document", sa.Text, nullable=False),  # ImageInventory as JSON
)
