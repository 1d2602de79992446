"""Manifests are sealed in their database rows (``soko.crypto.rows``): no payload in plaintext, sizes as before, a
tampered or moved row is refused (never wrong bytes) and reported by ``soko fsck``."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from soko.crypto.rows import OVERHEAD, is_sealed, plain_length
from soko.errors import ContentUnreadable
from soko.meta.schema import manifests
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from tests.domain import push_image


def test_manifest_rows_are_sealed(registry) -> None:
    ref = RepoRef("000000000000", "sealed/manifests")
    first = push_image(registry, ref, "v1", [os.urandom(1000)])
    second = push_image(registry, ref, "v2", [os.urandom(1000)])
    payload = registry.manifests.get(ref, "v1").payload
    with registry.ctx.db.read() as conn:
        rows = {r.digest: r.payload for r in conn.execute(sa.select(manifests.c.digest, manifests.c.payload))}
    assert all(is_sealed(stored) and b"schemaVersion" not in stored for stored in rows.values())
    assert len(rows[first]) == len(payload) + OVERHEAD
    with registry.ctx.db.read() as conn:  # sizes computed in SQL (usage, referrers) are the plaintext's
        sized = conn.execute(sa.select(plain_length(manifests.c.payload)).where(manifests.c.digest == first)).scalar()
    assert sized == len(payload)
    assert list(check(registry.ctx)) == []

    # a payload moved to another row (or edited) fails authentication: refused, and fsck names it
    with registry.ctx.db.write() as conn:
        conn.execute(sa.update(manifests).where(manifests.c.digest == second).values(payload=rows[first]))
    registry.ctx.generation.bump()
    with pytest.raises(ContentUnreadable):
        registry.manifests.get(ref, "v2")
    assert [p.kind for p in check(registry.ctx)] == ["tampered-manifest"]
    assert registry.manifests.get(ref, "v1").payload == payload
