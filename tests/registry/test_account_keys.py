"""Per-account service keys (AES256, ``soko.registry.account_keys``): one object per digest, its key wrapped by each
account that holds it; the deployment key and other accounts' keys do not open it; rotation, crypto-shredding of an
account, mounts across accounts, GC, fsck, and content of earlier versions moved over by encrypt-existing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from soko.crypto.segments import KeyUnavailable
from soko.errors import ContentUnreadable
from soko.meta.schema import account_keys, blob_keys, blobs
from soko.registry import Registry
from soko.registry.account_keys import KEK_ID, AccountKeys, key_id_of
from soko.registry.encrypt_existing import encrypt_existing
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from soko.storage.paths import blob_path
from tests.clock import Clock
from tests.domain import push_blob, push_image

A, B = "111111111111", "222222222222"
SHARED = os.urandom((1 << 19) + 4321)  # three segments
ONLY_A = os.urandom(70_000)


def _read(registry: Registry, ref: RepoRef, digest: str, offset: int = 0) -> bytes:
    with registry.blobs.reader(registry.blobs.open(ref, digest), offset) as f:
        return f.read()


def _wraps(registry: Registry) -> dict[str, set[str]]:
    with registry.ctx.db.read() as conn:
        rows = conn.execute(sa.select(blob_keys.c.digest, blob_keys.c.account_id)).all()
    found: dict[str, set[str]] = {}
    for digest, account in rows:
        found.setdefault(digest, set()).add(account)
    return found


def _sealed(registry: Registry, digest: str) -> Path:
    return Path(registry.ctx.storage.inner.root) / "sealed" / blob_path(digest)  # type: ignore[attr-defined]


def _repos(registry: Registry) -> tuple[RepoRef, RepoRef]:
    a, b = RepoRef(A, "team/app"), RepoRef(B, "team/app")
    for ref in (a, b):
        registry.repositories.create(ref)
    return a, b


def test_one_object_per_digest_opened_only_through_each_accounts_own_wrap(registry) -> None:
    a, b = _repos(registry)
    shared = push_blob(registry, a, SHARED)
    only_a = push_blob(registry, a, ONLY_A)
    assert push_blob(registry, b, SHARED) == shared  # deduplicated: B gets a wrap of its own, not a second object
    assert _wraps(registry) == {shared: {A, B}, only_a: {A}}
    raw = _sealed(registry, shared).read_bytes()
    assert raw[28:35] == KEK_ID.encode() and SHARED[:64] not in raw
    for ref in (a, b):
        assert _read(registry, ref, shared) == SHARED
        assert _read(registry, ref, shared, 300_000) == SHARED[300_000:]  # a range decrypts from its segment
    assert _read(registry, a, only_a) == ONLY_A
    # the deployment's service key alone opens none of it
    with pytest.raises(KeyUnavailable):
        registry.ctx.storage.reader(blob_path(shared)).read()
    # each wrap opens only with its own account's key (and names that account's key)
    keys = registry.repositories.account_keys
    with registry.ctx.db.read() as conn:
        wrap_a = keys.wrapped_for(conn, shared, A)
        wrap_b = keys.wrapped_for(conn, shared, B)
        key_ids = dict(conn.execute(sa.select(account_keys.c.account_id, account_keys.c.key_id)).all())
    assert wrap_a is not None and wrap_b is not None and wrap_a != wrap_b
    assert (key_id_of(wrap_a), key_id_of(wrap_b)) == (key_ids[A], key_ids[B])
    with pytest.raises(KeyUnavailable):
        keys.unwrap(None, B, wrap_a)
    assert keys.unwrap(None, A, wrap_a) == keys.unwrap(None, B, wrap_b)
    assert list(check(registry.ctx)) == []


def test_shredding_an_account_makes_only_its_own_content_unreadable(registry) -> None:
    registry.ctx.clock = Clock(1_800_000_000.0)
    a, b = _repos(registry)
    image = push_image(registry, a, "v1", [SHARED, ONLY_A])
    push_blob(registry, b, SHARED)
    shared, only_a = (f"sha256:{hashlib.sha256(d).hexdigest()}" for d in (SHARED, ONLY_A))
    assert registry.repositories.account_keys.shred(A) == 1
    with pytest.raises(ContentUnreadable, match="crypto-shredded"):
        _read(registry, a, only_a)
    with pytest.raises(ContentUnreadable, match="crypto-shredded"):
        _read(registry, a, shared)
    assert _read(registry, b, shared) == SHARED  # B's own key still opens what B holds
    problems = list(check(registry.ctx))
    assert {p.subject for p in problems if p.kind == "crypto-shredded"} >= {only_a}
    assert shared not in {p.subject for p in problems}
    assert all(p.kind == "crypto-shredded" for p in problems)
    # A pushes again: a new key; the shared layer is wrapped for it from B's wrap, its own layer stored anew
    push_image(registry, a, "v2", [SHARED, ONLY_A])
    assert _read(registry, a, only_a) == ONLY_A and _read(registry, a, shared) == SHARED
    assert registry.manifests.get(a, image).digest == image
    # the collector deletes the wraps with the blob
    for ref in (a, b):
        registry.repositories.delete(ref, force=True)
    registry.ctx.clock.now += 3 * 86400  # type: ignore[attr-defined]
    registry.gc.run(grace_period=0)
    assert _wraps(registry) == {}


def test_rotation_keeps_earlier_objects_readable(registry) -> None:
    a, _ = _repos(registry)
    first = push_blob(registry, a, SHARED)
    keys = registry.repositories.account_keys
    new_key = keys.rotate(A)
    second = push_blob(registry, a, ONLY_A)
    with registry.ctx.db.read() as conn:
        assert key_id_of(keys.wrapped_for(conn, second, A) or b"") == new_key
        assert key_id_of(keys.wrapped_for(conn, first, A) or b"") != new_key
    assert _read(registry, a, first) == SHARED and _read(registry, a, second) == ONLY_A


def test_a_mount_across_accounts_wraps_the_key_for_the_destination(registry) -> None:
    a, b = _repos(registry)
    digest = push_blob(registry, a, SHARED)
    assert registry.blobs.mount(b, digest, a) is not None
    assert _wraps(registry) == {digest: {A, B}}
    registry.repositories.account_keys.shred(A)
    assert _read(registry, b, digest) == SHARED


class _EarlierVersion(AccountKeys):
    """Account keys as a version before them had none: objects sealed under the deployment key, no wraps."""

    enabled = False  # type: ignore[assignment]


def test_content_of_earlier_versions_moves_to_account_keys(registry, settings) -> None:
    a, b = _repos(registry)
    # an earlier version: the same database and storage, its objects sealed under the deployment key
    old = Registry(settings, registry.ctx.db, registry.ctx.storage)
    old.repositories.account_keys.__class__ = _EarlierVersion
    digest = push_blob(old, a, SHARED)
    push_blob(old, b, SHARED)
    assert _wraps(registry) == {} and _sealed(registry, digest).read_bytes()[28:38] == b"service/v1"
    assert _read(registry, a, digest) == SHARED  # read as it is
    dry = encrypt_existing(registry.ctx, dry_run=True)
    assert dry.remaining == 1
    report = encrypt_existing(registry.ctx)
    assert (report.blobs_rekeyed, report.bytes) == (1, len(SHARED))
    assert _wraps(registry) == {digest: {A, B}}
    assert _sealed(registry, digest).read_bytes()[28:35] == KEK_ID.encode()
    for ref in (a, b):
        assert _read(registry, ref, digest) == SHARED
    assert encrypt_existing(registry.ctx).remaining == 0
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(blobs.c.seal_id)).scalar() is not None
    assert list(check(registry.ctx)) == []


def test_the_collector_deletes_the_wraps_of_accounts_that_no_longer_hold_a_digest(registry) -> None:
    registry.ctx.clock = Clock(1_800_000_000.0)
    a, b = _repos(registry)
    push_image(registry, a, "v1", [SHARED])
    push_image(registry, b, "v1", [SHARED])
    shared = f"sha256:{hashlib.sha256(SHARED).hexdigest()}"
    registry.repositories.delete(b, force=True)
    registry.ctx.clock.now += 3 * 86400  # type: ignore[attr-defined]
    report = registry.gc.run(grace_period=0)
    assert report.wraps_deleted >= 2 and _wraps(registry)[shared] == {A}  # (B's config and layer)
    registry.repositories.account_keys.shred(A)  # nothing of it opens through B's old wrap either
    assert registry.repositories.account_keys.object_key(None, shared) is None
