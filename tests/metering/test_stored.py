"""Stored bytes are computed from the metadata, so they are exact through dedup, deletes and GC (both databases)."""

from __future__ import annotations

import os

from soko.metering.stored import account_physical_bytes, snapshot
from soko.registry.models import RepoRef
from tests.metering.helpers import config_blob, push_blob, push_image

ACCOUNT = "000000000000"
OTHER = "111111111111"


def by_repo(stored) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r.account_id, r.repository): (r.logical_bytes, r.physical_bytes) for r in stored.repositories}


def test_shared_layers_count_once_physically_and_in_every_repository_logically(registry) -> None:
    a, b, c = RepoRef(ACCOUNT, "app/a"), RepoRef(ACCOUNT, "app/b"), RepoRef(OTHER, "app/c")
    shared, only_a, only_b = os.urandom(1001), os.urandom(3001), os.urandom(777)
    ca, cb, cc = config_blob(1), config_blob(2), config_blob(3)
    _, ma = push_image(registry, a, "v1", ca, [shared, only_a])
    _, mb = push_image(registry, b, "v1", cb, [shared, only_b])
    _, mc = push_image(registry, c, "v1", cc, [shared])
    push_blob(registry, a, only_a)  # pushing a layer again stores nothing new

    stored = registry.metering.stored()
    logical_a = len(ca) + 1001 + 3001 + len(ma)
    logical_b = len(cb) + 1001 + 777 + len(mb)
    # The shared layer's 1001 bytes split 501 (lowest repository id) / 500 within the account.
    assert by_repo(stored) == {
        (ACCOUNT, "app/a"): (logical_a, logical_a - 500),
        (ACCOUNT, "app/b"): (logical_b, logical_b - 501),
        (OTHER, "app/c"): (len(cc) + 1001 + len(mc), len(cc) + 1001 + len(mc)),
    }
    assert stored.account_logical == {ACCOUNT: logical_a + logical_b, OTHER: len(cc) + 1001 + len(mc)}
    physical = len(ca) + len(cb) + 1001 + 3001 + 777 + len(ma) + len(mb)
    assert stored.account_physical == {ACCOUNT: physical, OTHER: len(cc) + 1001 + len(mc)}
    # The repositories' physical shares add up exactly to the account's distinct bytes.
    assert sum(p for (acct, _), (_, p) in by_repo(stored).items() if acct == ACCOUNT) == physical
    # Registry-wide: every blob once, whichever accounts use it.
    assert stored.registry_blob_bytes == len(ca) + len(cb) + len(cc) + 1001 + 3001 + 777
    assert stored.registry_manifest_bytes == len(ma) + len(mb) + len(mc)
    assert registry.metering.stored(ACCOUNT).account_physical == {ACCOUNT: physical}


def test_a_mounted_blob_is_shared_three_ways_and_the_shares_still_add_up(registry) -> None:
    a, b, c = (RepoRef(ACCOUNT, f"mount/{n}") for n in "abc")
    layer = os.urandom(1000)
    for ref in (a, b):
        push_blob(registry, ref, layer)
    assert registry.blobs.mount(c, push_blob(registry, a, layer), a) is not None
    physical = {r.repository: r.physical_bytes for r in registry.metering.stored().repositories}
    assert physical == {"mount/a": 334, "mount/b": 333, "mount/c": 333}
    with snapshot(registry.ctx.db) as conn:
        assert account_physical_bytes(conn) == {ACCOUNT: 1000}


def test_deleting_a_manifest_and_collecting_garbage_lowers_the_figures_exactly(registry) -> None:
    a, b = RepoRef(ACCOUNT, "gc/a"), RepoRef(ACCOUNT, "gc/b")
    shared, only_b = os.urandom(2000), os.urandom(5000)
    ca, cb = config_blob(10), config_blob(11)
    _, ma = push_image(registry, a, "v1", ca, [shared])
    digest_b, mb = push_image(registry, b, "v1", cb, [shared, only_b])
    before = registry.metering.stored()
    assert before.account_physical[ACCOUNT] == len(ca) + len(cb) + 2000 + 5000 + len(ma) + len(mb)

    registry.manifests.delete(b, digest_b)
    # The manifest's bytes go at once; its blobs stay linked (and readable) until GC removes the links.
    after_delete = registry.metering.stored()
    assert by_repo(after_delete)[(ACCOUNT, "gc/b")][0] == by_repo(before)[(ACCOUNT, "gc/b")][0] - len(mb)
    assert after_delete.account_physical[ACCOUNT] == before.account_physical[ACCOUNT] - len(mb)

    registry.gc.run(grace_period=0)
    after_gc = registry.metering.stored()
    assert by_repo(after_gc) == {
        (ACCOUNT, "gc/a"): (len(ca) + 2000 + len(ma), len(ca) + 2000 + len(ma)),  # now holds the shared layer alone
        (ACCOUNT, "gc/b"): (0, 0),
    }
    assert after_gc.account_physical[ACCOUNT] == len(ca) + 2000 + len(ma)
    assert after_gc.registry_blob_bytes == len(ca) + 2000
    assert after_gc.registry_manifest_bytes == len(ma)


def test_an_empty_registry_reports_zeroes(registry) -> None:
    stored = registry.metering.stored()
    assert stored.repositories == [] and stored.account_physical == {}
    assert stored.registry_blob_bytes == 0 and stored.registry_manifest_bytes == 0


def test_a_copy_per_customer_key_is_counted_once_per_key(registry) -> None:
    """KMS repositories keep their own copy of a blob per key (blob_copies): physically the account stores the
    layer three times here (service key, key A, key B), and the repositories of one key share their copy."""
    from soko.iam.service import Identity
    from soko.kms.service import KeyService
    from tests.clock import Clock
    from tests.kms.test_service import ROOT

    registry.ctx.clock = Clock(1_800_000_000.0)
    kms = KeyService(registry.ctx, Identity(registry.ctx))
    registry.encryption.attach(kms)
    key_a, key_b = kms.create_key(ROOT, "a"), kms.create_key(ROOT, "b")
    plain, a1, a2, b1 = (RepoRef(ACCOUNT, f"keyed/{n}") for n in ("plain", "a1", "a2", "b1"))
    registry.repositories.create(plain)
    for ref, key in ((a1, key_a), (a2, key_a), (b1, key_b)):
        registry.repositories.create(ref, encryption_type="KMS", kms_key=key.key_id)
    layer = os.urandom(1000)
    for ref in (plain, a1, a2, b1):
        push_blob(registry, ref, layer)

    stored = registry.metering.stored()
    assert {r.repository: (r.logical_bytes, r.physical_bytes) for r in stored.repositories} == {
        "keyed/plain": (1000, 1000),  # the service-key copy, alone
        "keyed/a1": (1000, 500),  # key A's copy, shared by a1 and a2
        "keyed/a2": (1000, 500),
        "keyed/b1": (1000, 1000),  # key B's copy
    }
    assert stored.account_physical == {ACCOUNT: 3000}
    assert stored.registry_blob_bytes == 1000 + 2 * 1000  # the blob row + the two keyed copies
    with snapshot(registry.ctx.db) as conn:
        assert account_physical_bytes(conn, ACCOUNT) == {ACCOUNT: 3000}


def test_a_blob_pushed_only_to_kms_repositories_is_stored_once_per_key(registry) -> None:
    """A blob uploaded only to KMS repositories has no service-key copy: the blob store holds its keyed copies."""
    from soko.iam.service import Identity
    from soko.kms.service import KeyService
    from tests.clock import Clock
    from tests.kms.test_service import ROOT

    registry.ctx.clock = Clock(1_800_000_000.0)
    kms = KeyService(registry.ctx, Identity(registry.ctx))
    registry.encryption.attach(kms)
    key_a, key_b = kms.create_key(ROOT, "a"), kms.create_key(ROOT, "b")
    a, b = RepoRef(ACCOUNT, "only/a"), RepoRef(ACCOUNT, "only/b")
    registry.repositories.create(a, encryption_type="KMS", kms_key=key_a.key_id)
    registry.repositories.create(b, encryption_type="KMS", kms_key=key_b.key_id)
    layer = os.urandom(1000)
    push_blob(registry, a, layer)
    assert registry.metering.stored().registry_blob_bytes == 1000  # key A's copy only
    push_blob(registry, b, layer)
    stored = registry.metering.stored()
    assert stored.registry_blob_bytes == 2000 and stored.account_physical == {ACCOUNT: 2000}
