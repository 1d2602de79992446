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

# Deletions the collector committed but storage has not carried out yet (``soko.gc.tombstones``): the blob row goes
# and its tombstone comes in one transaction; after the commit, with no row lock held, the executor deletes the
# stored object, then the tombstone. ``claimed_until``/``claimed_by``: an executor is deleting it right now (wall
# clock; a claim that lapsed belongs to an executor that died or stalled). A re-push of the digest removes pending
# tombstones of it, and waits for a claimed one to finish.
gc_tombstones = sa.Table(
    "gc_tombstones",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(DIGEST_LENGTH), nullable=False),
    sa.Column("path", sa.String(512), nullable=False),  # the storage object to delete
    sa.Column("not_before", Timestamp, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),  # blob-delete | storage-sweep
    sa.Column("claimed_until", Timestamp, nullable=True),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Index(None, "not_before"),
    sa.Index(None, "digest"),
)
