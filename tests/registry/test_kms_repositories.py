"""Repositories with encryptionType KMS / KMS_DSSE through the domain (``soko.registry.encryption``): a copy per key,
deduplicated within a key, re-encrypted across keys, collected per key; two layers for KMS_DSSE; range reads;
tampering and crypto-shredding told apart by ``soko fsck``."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from soko.crypto.segments import SealBroken
from soko.errors import BlobUnknown, ContentUnreadable
from soko.iam.service import Identity
from soko.kms.service import DAY, KeyService
from soko.meta.schema import blob_copies, blobs
from soko.registry.encryption import KeyUnusable
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from soko.storage.paths import blob_path, keyed_path
from tests.clock import Clock
from tests.domain import push_blob, push_image
from tests.kms.test_service import ROOT

ACCOUNT = "000000000000"
DATA = os.urandom((1 << 20) + 12345)  # four segments and a bit


@pytest.fixture
def kms(registry) -> KeyService:
    registry.ctx.clock = Clock(1_800_000_000.0)  # (tests move it: registry.ctx.clock.now)
    service = KeyService(registry.ctx, Identity(registry.ctx))
    registry.encryption.attach(service)
    return service


def _repo(registry, kms, name: str, kind: str = "KMS", key: str | None = None) -> RepoRef:
    ref = RepoRef(ACCOUNT, name)
    registry.repositories.create(ref, encryption_type=kind, kms_key=key)
    return ref


def _read(registry, ref: RepoRef, digest: str, offset: int = 0) -> bytes:
    with registry.blobs.reader(registry.blobs.open(ref, digest), offset) as f:
        return f.read()


def _root(registry) -> Path:
    return Path(registry.ctx.storage.inner.root)


def _raw(registry, path: str) -> bytes:
    return (_root(registry) / "sealed" / path).read_bytes()  # type: ignore[attr-defined]


def _copies(registry) -> set[tuple[str, str]]:
    with registry.ctx.db.read() as conn:
        return {(r.digest, r.keyspace) for r in conn.execute(sa.select(blob_copies.c.digest, blob_copies.c.keyspace))}


def test_a_copy_per_key_dedup_within_one_mount_across_and_gc(registry, kms) -> None:
    clock = registry.ctx.clock
    key = kms.create_key(ROOT, "a")
    other = kms.create_key(ROOT, "b")
    a1 = _repo(registry, kms, "a1", key=key.key_id)
    a2 = _repo(registry, kms, "a2", key=key.arn)
    b = _repo(registry, kms, "b1", key=other.key_id)
    plain = RepoRef(ACCOUNT, "plain")
    registry.repositories.create(plain)
    image = push_image(registry, a1, "v1", [DATA])
    manifest = registry.manifests.get(a1, image)
    parsed = json.loads(manifest.payload)
    config, digest = parsed["config"]["digest"], parsed["layers"][0]["digest"]
    push_image(registry, a2, "v1", [DATA])  # same key: the layer is stored once
    assert {k for d, k in _copies(registry) if d == digest} == {f"kms/{key.key_id}"}
    for dest, source in ((b, a1), (plain, b)):  # another key: re-encrypted; then the service key
        for d in (config, digest):
            assert registry.blobs.mount(dest, d, source) is not None
        registry.manifests.put(dest, "v1", manifest.payload, manifest.media_type)
    assert {(d, k) for d, k in _copies(registry) if d == digest} == {
        (digest, f"kms/{key.key_id}"),
        (digest, f"kms/{other.key_id}"),
    }
    for ref in (a1, a2, b, plain):
        assert _read(registry, ref, digest) == DATA
        assert _read(registry, ref, digest, 300_000) == DATA[300_000:]  # a range decrypts from its segment
    stored = [_raw(registry, keyed_path(f"kms/{k}", digest)) for k in (key.key_id, other.key_id)]
    assert stored[0] != stored[1] and DATA[:64] not in stored[0] + stored[1]

    # a key's copy goes when no repository of that key links the blob; the blob lives on for the others
    for ref in (a1, a2):
        registry.repositories.delete(ref, force=True)
    clock.now += 2 * DAY
    registry.gc.run(grace_period=0)
    assert {k for d, k in _copies(registry) if d == digest} == {f"kms/{other.key_id}"}
    assert not (_root(registry) / "sealed" / keyed_path(f"kms/{key.key_id}", digest)).exists()
    assert _read(registry, b, digest) == DATA and _read(registry, plain, digest) == DATA
    for ref in (b, plain):
        registry.repositories.delete(ref, force=True)
    clock.now += 2 * DAY
    registry.gc.run(grace_period=0)
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(blobs.c.digest)).first() is None
    assert _copies(registry) == set()
    assert list(registry.ctx.storage.walk("keyed")) == [] and list(registry.ctx.storage.walk("blobs")) == []


def test_kms_dsse_seals_twice_and_a_kms_key_alone_does_not_open_it(registry, kms) -> None:
    key = kms.create_key(ROOT, "dsse")
    ref = _repo(registry, kms, "dsse", "KMS_DSSE", key.key_id)
    digest = push_blob(registry, ref, DATA)
    assert _read(registry, ref, digest, 700_001) == DATA[700_001:]
    raw = _raw(registry, keyed_path(f"dsse/{key.key_id}", digest))
    assert raw.startswith(b"SOKOSEAL") and raw[28:31] == b"kms"  # the outer layer: the customer key's
    blob = registry.blobs.open(ref, digest)
    outer = registry.encryption.open_object(blob.keyspace, blob.wrapped_key).inner  # the customer-key layer only
    with outer.reader(blob.storage_path) as f:
        inner = f.read()
    assert inner.startswith(b"SOKOSEAL") and inner[28:38] == b"service/v1" and DATA[:64] not in inner


def test_key_states_tampering_and_crypto_shredding(registry, kms) -> None:
    clock = registry.ctx.clock
    key = kms.create_key(ROOT, "states")
    ref = _repo(registry, kms, "states", key=key.key_id)
    digest = push_blob(registry, ref, DATA)
    kms.disable_key(ROOT, key.key_id)
    with pytest.raises(KeyUnusable) as exc:
        _read(registry, ref, digest)
    assert exc.value.kms_error == "DisabledException" and key.arn in exc.value.message
    with pytest.raises(KeyUnusable):
        registry.uploads.start(ref)
    with pytest.raises(KeyUnusable):
        registry.manifests.put(ref, "t", b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
                               b'"manifests":[]}', None)
    assert list(check(registry.ctx, encryption=registry.encryption)) == []  # disabled: not a problem, not checked
    kms.enable_key(ROOT, key.key_id)
    assert list(check(registry.ctx, encryption=registry.encryption)) == []

    path = _root(registry) / "sealed" / keyed_path(f"kms/{key.key_id}", digest)
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises((ContentUnreadable, SealBroken)):  # (mid-stream: the handler ends the response)
        _read(registry, ref, digest)
    assert [p.kind for p in check(registry.ctx, encryption=registry.encryption)] == ["tampered-blob"]
    path.write_bytes(original)

    kms.schedule_key_deletion(ROOT, key.key_id, 7)
    with pytest.raises(KeyUnusable) as exc:
        _read(registry, ref, digest)
    assert exc.value.kms_error == "KMSInvalidStateException" and "cancel-key-deletion" in exc.value.message
    clock.now += 8 * DAY
    with pytest.raises(KeyUnusable) as exc:
        _read(registry, ref, digest)
    assert exc.value.kms_error == "NotFoundException"
    assert [p.kind for p in check(registry.ctx, encryption=registry.encryption)] == ["crypto-shredded"]


def test_fsck_checks_the_service_key_copy_that_aes256_repositories_left(registry, kms) -> None:
    """A blob pushed to an AES256 repository and mounted into a KMS one keeps its service-key object when the AES256
    repository goes (the collector deletes it only with the blob row): fsck checks it — tampered, wrong size,
    missing — through an account's wrap while one is left; once the collector dropped the wraps no key opens it, so
    only its presence and size are checked (not crypto-shredded: nothing reads it). A blob only KMS repositories
    held has no service-key copy to miss."""
    clock = registry.ctx.clock
    key = kms.create_key(ROOT, "left")
    keyed = _repo(registry, kms, "keyed", key=key.key_id)
    plain = RepoRef(ACCOUNT, "left-plain")
    registry.repositories.create(plain)
    manifest = registry.manifests.get(plain, push_image(registry, plain, "v1", [DATA]))
    parsed = json.loads(manifest.payload)
    digest = parsed["layers"][0]["digest"]
    for d in (parsed["config"]["digest"], digest):
        assert registry.blobs.mount(keyed, d, plain) is not None
    registry.manifests.put(keyed, "v1", manifest.payload, manifest.media_type)
    push_image(registry, keyed, "v2", [os.urandom(1000)])  # only ever under the KMS key: no service-key object
    registry.repositories.delete(plain, force=True)
    subject = f"{digest} (under the service key)"

    def problems() -> list[tuple[str, str]]:
        return [(p.kind, p.subject) for p in check(registry.ctx, encryption=registry.encryption)]

    assert problems() == []
    path = _root(registry) / "sealed" / blob_path(digest)
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 1
    path.write_bytes(bytes(flipped))
    assert problems() == [("tampered-blob", subject)]  # (the account's wrap is still there: re-hashed)
    path.write_bytes(original)

    clock.now += 2 * DAY
    registry.gc.run(grace_period=0)  # drops the account's wrap; the object stays with the blob row
    assert path.read_bytes() == original and _read(registry, keyed, digest) == DATA
    assert problems() == []
    path.write_bytes(original[:-1])
    assert problems() == [("size-mismatch", subject)]
    path.unlink()
    assert problems() == [("missing-blob", subject)]


def test_an_aes256_repository_never_reads_a_keyed_copy(registry, kms) -> None:
    key = kms.create_key(ROOT, "k")
    ref = _repo(registry, kms, "only-kms", key=key.key_id)
    digest = push_blob(registry, ref, DATA)
    assert not (_root(registry) / blob_path(digest)).exists()
    plain = RepoRef(ACCOUNT, "plain")
    registry.repositories.create(plain)
    with pytest.raises(BlobUnknown):
        registry.blobs.open(plain, digest)
    assert push_blob(registry, plain, DATA) == digest  # its own service-key copy
    assert _read(registry, plain, digest) == DATA and _read(registry, ref, digest) == DATA


def test_concurrent_pushes_of_one_layer_store_one_copy(registry, kms) -> None:
    key = kms.create_key(ROOT, "race")
    refs = [_repo(registry, kms, f"race{i}", key=key.key_id) for i in range(2)]
    plain = RepoRef(ACCOUNT, "race-plain")
    registry.repositories.create(plain)
    targets = [*refs, *refs, plain, plain]
    with ThreadPoolExecutor(len(targets)) as pool:
        digests = set(pool.map(lambda ref: push_blob(registry, ref, DATA), targets))
    (digest,) = digests
    assert _copies(registry) == {(digest, f"kms/{key.key_id}")}
    for ref in targets:
        assert _read(registry, ref, digest) == DATA
    assert list(check(registry.ctx, encryption=registry.encryption)) == []
    leftovers = [p for p in (_root(registry) / "sealed" / "uploads").rglob("*") if p.is_file()]
    assert leftovers == []  # every upload's data moved into place or dropped


def test_manifests_are_sealed_under_the_repository_key(registry, kms) -> None:
    """A KMS repository's manifest rows are sealed under its keyspace's row key (KMS-made once, wrapped): the
    service key alone does not open them; a disabled, pending-deletion or deleted key makes manifest reads fail as
    blob reads do (crypto-shredding covers manifests), and reads come back once the key is usable again; an AES256
    repository's manifests stay under the service key."""
    from soko.crypto.rows import KEYED_MAGIC, MAGIC, RowBroken, RowSealer
    from soko.meta.schema import keyspace_keys, manifests

    clock = registry.ctx.clock
    key = kms.create_key(ROOT, "manifests")
    ref, other = _repo(registry, kms, "m1", key=key.key_id), _repo(registry, kms, "m2", key=key.arn)
    plain = RepoRef(ACCOUNT, "m-plain")
    registry.repositories.create(plain)
    digests = [push_image(registry, r, "v1", [os.urandom(100)]) for r in (ref, other, plain)]
    with registry.ctx.db.read() as conn:
        stored = dict(conn.execute(sa.select(manifests.c.digest, manifests.c.payload)).all())
        assert conn.execute(sa.select(sa.func.count()).select_from(keyspace_keys)).scalar() == 1  # one per key
    assert [bytes(stored[d])[:5] for d in digests] == [KEYED_MAGIC, KEYED_MAGIC, MAGIC]
    service = RowSealer(registry.ctx.storage.ring.row_key, KEYED_MAGIC)  # the service key's row key
    with pytest.raises(RowBroken):
        service.open(stored[digests[0]], digests[0])
    payload = registry.manifests.get(ref, "v1").payload
    assert json.loads(payload)["schemaVersion"] == 2

    kms.disable_key(ROOT, key.key_id)
    for r in (ref, other):
        with pytest.raises(KeyUnusable) as exc:
            registry.manifests.get(r, "v1")
        assert exc.value.kms_error == "DisabledException" and key.arn in exc.value.message
    assert registry.manifests.get(plain, "v1").digest == digests[2]  # the service key's: unaffected
    assert list(check(registry.ctx, encryption=registry.encryption)) == []  # disabled: unchecked, not a problem
    kms.enable_key(ROOT, key.key_id)
    assert registry.manifests.get(ref, "v1").payload == payload

    kms.schedule_key_deletion(ROOT, key.key_id, 7)
    with pytest.raises(KeyUnusable) as exc:
        registry.manifests.get(ref, digests[0])
    assert exc.value.kms_error == "KMSInvalidStateException"
    clock.now += 8 * DAY
    with pytest.raises(KeyUnusable) as exc:
        registry.manifests.get(ref, "v1")
    assert exc.value.kms_error == "NotFoundException"
    kinds = sorted({p.kind for p in check(registry.ctx, encryption=registry.encryption)})
    assert kinds == ["crypto-shredded"]
    assert registry.manifests.get(plain, "v1").digest == digests[2]


def test_encrypt_existing_moves_earlier_manifest_rows_under_the_key(registry, kms) -> None:
    """Rows an earlier version stored in a KMS repository (plaintext, or sealed under the service key) are moved
    under the repository's key by ``soko encrypt-existing``; while the key is unusable they are left (counted)."""
    from soko.crypto.rows import KEYED_MAGIC
    from soko.meta.schema import manifests
    from soko.registry.encrypt_existing import encrypt_existing

    key = kms.create_key(ROOT, "earlier")
    ref = _repo(registry, kms, "earlier", key=key.key_id)
    digests = [push_image(registry, ref, f"v{i}", [os.urandom(50)]) for i in range(3)]
    payloads = {d: registry.manifests.get(ref, d).payload for d in digests}
    with registry.ctx.db.write() as conn:  # what earlier versions stored: plaintext, and the service key's rows
        for n, d in enumerate(digests):
            old = payloads[d] if n == 0 else registry.encryption.seal_row(payloads[d], d)
            conn.execute(sa.update(manifests).where(manifests.c.digest == d).values(payload=old))

    def heads() -> list[bytes]:
        with registry.ctx.db.read() as conn:
            rows = dict(conn.execute(sa.select(manifests.c.digest, manifests.c.payload)).all())
        return [bytes(rows[d])[:5] for d in digests]

    kms.disable_key(ROOT, key.key_id)
    report = encrypt_existing(registry.ctx, encryption=registry.encryption)
    assert (report.rekeyed, report.keys_unusable) == (0, 3) and KEYED_MAGIC not in heads()
    kms.enable_key(ROOT, key.key_id)
    assert encrypt_existing(registry.ctx, dry_run=True, encryption=registry.encryption).rekeyed == 3
    assert encrypt_existing(registry.ctx, encryption=registry.encryption).rekeyed == 3
    assert heads() == [KEYED_MAGIC] * 3
    registry.ctx.generation.bump()
    assert [registry.manifests.get(ref, d).payload for d in digests] == [payloads[d] for d in digests]
    assert encrypt_existing(registry.ctx, encryption=registry.encryption).rekeyed == 0
