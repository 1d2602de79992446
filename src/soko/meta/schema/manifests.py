from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

# Manifests live in the database (≤ 4 MiB each): a pull by tag is one indexed query, and the payload is stored
# verbatim so its digest is the hash of exactly these bytes.
manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("digest", sa.String(DIGEST_LENGTH), nullable=False),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("artifact_type", sa.String(255), nullable=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    # Sum of config + layer sizes (for an index: the largest child), as ECR's imageSizeInBytes.
    sa.Column("image_size", sa.BigInteger, nullable=False),
    sa.Column("config_digest", sa.String(DIGEST_LENGTH), nullable=True),
    sa.Column("subject_digest", sa.String(DIGEST_LENGTH), nullable=True),
    sa.Column("annotations", sa.Text, nullable=True),  # JSON, for the referrers API
    sa.Column("pushed_at", Timestamp, nullable=False),
    sa.Column("last_pulled_at", Timestamp, nullable=True),
    # ECR's imageStatus: ACTIVE, ARCHIVED (the archive storage class: not pullable) or ACTIVATING (being restored).
    sa.Column("image_status", sa.String(16), nullable=False, server_default="ACTIVE"),
    sa.Column("last_archived_at", Timestamp, nullable=True),
    sa.Column("last_activated_at", Timestamp, nullable=True),
    sa.UniqueConstraint("repository_id", "digest"),
    sa.Index(None, "repository_id", "subject_digest"),
    sa.Index(None, "digest"),  # does any repository still hold this image (its inventory is kept while one does)
)

# Blobs (config and layers) a manifest references: what keeps them alive for GC.
manifest_blobs = sa.Table(
    "manifest_blobs",
    metadata,
    sa.Column("manifest_id", Id, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(DIGEST_LENGTH), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Index(None, "digest"),
)

# Manifests an index references, by digest within the same repository.
manifest_children = sa.Table(
    "manifest_children",
    metadata,
    sa.Column("parent_id", Id, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("child_digest", sa.String(DIGEST_LENGTH), primary_key=True),
    sa.Index(None, "child_digest"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("manifest_id", Id, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index(None, "manifest_id"),
)
