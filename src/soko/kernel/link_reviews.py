"""Enqueueing link reviews: called by the domain, inside the transaction that may have unreferenced a link."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from soko.meta.schema import gc_link_reviews, repository_blobs


def enqueue_link_reviews(
    conn: sa.Connection, repository_id: int, digests: Iterable[str], now: float, reason: str
) -> None:
    rows = [{"repository_id": repository_id, "digest": d, "queued_at": now, "reason": reason} for d in set(digests)]
    if rows:
        conn.execute(sa.insert(gc_link_reviews), rows)


def enqueue_repository_reviews(conn: sa.Connection, repository_id: int, now: float, reason: str) -> None:
    """A review of every link of the repository (about to be deleted with it): its blobs keep their grace period."""
    conn.execute(
        sa.insert(gc_link_reviews).from_select(
            ["repository_id", "digest", "queued_at", "reason"],
            sa.select(
                repository_blobs.c.repository_id,
                repository_blobs.c.digest,
                sa.literal(now, sa.Float(precision=53)),
                sa.literal(reason),
            ).where(repository_blobs.c.repository_id == repository_id),
        )
    )
