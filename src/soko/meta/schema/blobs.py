from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

# The content-addressed store: one row per stored blob, however many repositories use it.
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", sa.String(DIGEST_LENGTH), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # The sealed object (soko.crypto) holding the content; NULL: plaintext stored by a version before encryption.
    sa.Column("seal_id", sa.String(32), nullable=True),
)

# Which repositories may read which blobs ("linked" blobs, as in Distribution's linkedblobstore).
repository_blobs = sa.Table(
    "repository_blobs",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(DIGEST_LENGTH), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "digest"),
)
