"""Garbage-collection review queue (after GitLab's registry): events that may have made a repository's link to a
blob unreferenced enqueue a review; the collector re-checks each under row locks once the grace period passed."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

gc_link_reviews = sa.Table(
    "gc_link_reviews",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("repository_id", Id, nullable=False),  # no FK: the repository may be deleted meanwhile
    sa.Column("digest", sa.String(DIGEST_LENGTH), nullable=False),
    sa.Column("queued_at", Timestamp, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),  # upload | mount | manifest-delete | repository-delete
    sa.Index(None, "queued_at"),
    sa.Index(None, "repository_id", "digest"),
)
