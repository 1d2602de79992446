"""Enqueueing link reviews: called by the domain, inside the transaction that may have unreferenced a link."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from soko.meta.schema import gc_link_reviews


def enqueue_link_reviews(
    conn: sa.Connection, repository_id: int, digests: Iterable[str], now: float, reason: str
) -> None:
    rows = [{"repository_id": repository_id, "digest": d, "queued_at": now, "reason": reason} for d in set(digests)]
    if rows:
        conn.execute(sa.insert(gc_link_reviews), rows)
