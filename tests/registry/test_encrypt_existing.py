"""``soko encrypt-existing``: blobs an earlier version stored in plaintext are sealed online, read the same before,
during and after, and nothing of them stays in plaintext."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from soko.crypto.rows import is_sealed
from soko.meta.schema import blobs, manifests
from soko.registry import Registry
from soko.registry.encrypt_existing import encrypt_existing
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from soko.storage.filesystem import FilesystemDriver
from soko.storage.paths import blob_path
from tests.domain import push_image

ACCOUNT = "000000000000"


def _read(registry: Registry, ref: RepoRef, digest: str) -> bytes:
    with registry.blobs.reader(registry.blobs.open(ref, digest)) as f:
        return f.read()


def test_plaintext_of_earlier_versions_is_sealed_online(registry, settings) -> None:
    ref = RepoRef(ACCOUNT, "legacy")
    layers = [os.urandom(300_000), os.urandom(1000)]
    # an earlier version: the same database and storage, no encryption layer
    old = Registry(settings, registry.ctx.db, FilesystemDriver(settings.blob_root))
    registry.repositories.create(ref)
    push_image(old, ref, "v1", layers)
    root = Path(settings.blob_root)
    with registry.ctx.db.read() as conn:
        digests = [d for d, s in conn.execute(sa.select(blobs.c.digest, blobs.c.seal_id)) if s is None]
    assert len(digests) == 3 and all((root / blob_path(d)).exists() for d in digests)
    assert list(check(registry.ctx)) == []  # read transparently
    contents = {d: _read(registry, ref, d) for d in digests}

    manifest = registry.manifests.get(ref, "v1").payload
    dry = encrypt_existing(registry.ctx, dry_run=True)
    assert (dry.remaining, dry.manifests) == (3, 1)
    report = encrypt_existing(registry.ctx)
    assert (report.sealed, report.bytes, report.manifests) == (3, sum(len(c) for c in contents.values()), 1)
    with registry.ctx.db.read() as conn:
        assert all(is_sealed(p) for p in conn.execute(sa.select(manifests.c.payload)).scalars())
    registry.ctx.generation.bump()  # (a new process: nothing cached)
    assert registry.manifests.get(ref, "v1").payload == manifest
    assert encrypt_existing(registry.ctx).remaining == 0  # nothing left: a second run does nothing
    with registry.ctx.db.read() as conn:
        assert all(s is not None for _, s in conn.execute(sa.select(blobs.c.digest, blobs.c.seal_id)))
    for digest, content in contents.items():
        assert not (root / blob_path(digest)).exists() and (root / "sealed" / blob_path(digest)).exists()
        assert _read(registry, ref, digest) == content
    for path in root.rglob("*"):
        if path.is_file():
            stored = path.read_bytes()
            assert all(layer[1000:1064] not in stored for layer in layers[:1]), path
    assert list(check(registry.ctx)) == []
    old.close()
