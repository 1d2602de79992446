"""The archive storage class through the domain (both databases): status, content tiers in a separate archive
store, pulls refused, restore as a job, re-push, lifecycle transition then sinceImageTransitioned expiry on the
settable clock, GC and fsck with both tiers, metering of both tiers and the 90-day minimum."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from soko.crypto.driver import SealedDriver
from soko.crypto.keys import KeyRing
from soko.errors import BlobArchived, ImageArchived, ManifestBlobUnknown, StorageClassUpdateNotSupported
from soko.iam.secrets import MasterKey
from soko.meta import Database
from soko.meta.schema import archive_charges, blobs, event_outbox
from soko.metering.report import build_report
from soko.registry import Registry
from soko.registry.fsck import check
from soko.registry.lifecycle_runner import LifecycleRunner
from soko.registry.models import RepoRef
from soko.storage import FilesystemDriver
from tests.clock import Clock
from tests.domain import push_blob, push_image
from tests.migrated import migrated

ACCOUNT = "000000000000"
DAY = 86400.0
ARCHIVE_THEN_EXPIRE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {"tagStatus": "any", "countType": "sinceImageTransitioned", "countUnit": "days",
                              "countNumber": 90, "storageClass": "archive"},
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "selection": {"tagStatus": "tagged", "tagPrefixList": ["old"], "countType": "sinceImagePushed",
                              "countUnit": "days", "countNumber": 30},
                "action": {"type": "transition", "targetStorageClass": "archive"},
            },
        ]
    }
)  # fmt: skip


@pytest.fixture
def tiered(settings) -> Iterator[Registry]:
    """A registry whose archive tier is a store of its own (archive_storage_url), sealed like standard storage."""
    os.makedirs(settings.data_dir, exist_ok=True)
    migrated(settings.effective_database_url)
    db = Database(settings.effective_database_url, pool_size=4)
    ring = KeyRing.service(MasterKey.load(settings.master_key, settings.data_dir).storage_key)
    archive_root = os.path.join(settings.data_dir, "archive-store")
    reg = Registry(
        settings,
        db,
        SealedDriver(FilesystemDriver(settings.blob_root), ring),
        SealedDriver(FilesystemDriver(archive_root), ring),
    )
    reg.ctx.clock = Clock(1_800_000_000.0)
    yield reg
    reg.close()


def _bytes_under(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def _content(registry: Registry, ref: RepoRef, digest: str) -> bytes:
    with registry.blobs.reader(registry.blobs.open(ref, digest)) as f:
        return f.read()


def _gc(registry: Registry) -> None:
    registry.gc.run(grace_period=0)


def _events(registry: Registry) -> list[dict]:
    with registry.ctx.db.read() as conn:
        bodies = conn.execute(sa.select(event_outbox.c.body).order_by(event_outbox.c.id)).scalars()
        return [json.loads(b)["detail"] for b in bodies if "UPDATE_STORAGE_CLASS" in b]


def test_archive_frees_standard_storage_and_restore_brings_it_back(tiered: Registry) -> None:
    registry, clock = tiered, tiered.ctx.clock
    ref = RepoRef(ACCOUNT, "arch/app")
    shared, own = os.urandom(300_000), os.urandom(700_000)
    old = push_image(registry, ref, "old", [shared, own])
    push_image(registry, ref, "new", [shared])  # shares a layer with the image to archive
    standard_root, archive_root = registry.settings.blob_root, os.path.join(registry.settings.data_dir, "archive-store")
    before = _bytes_under(standard_root)

    image_id, status = registry.storage_classes.update(ref, {"imageTag": "old"}, "ARCHIVE")
    assert (image_id, status) == ({"imageDigest": old, "imageTag": "old"}, "ARCHIVED")
    with pytest.raises(ImageArchived, match="update-image-storage-class"):
        registry.manifests.get(ref, "old", record_pull=True)
    assert registry.storage_classes.update(ref, {"imageDigest": old}, "ARCHIVE")[1] == "ARCHIVED"  # idempotent

    assert registry.storage_classes.run_job(str(_manifest_id(registry, ref, old)))  # the queued job: moves content
    own_digest = f"sha256:{hashlib.sha256(own).hexdigest()}"
    with pytest.raises(BlobArchived):
        registry.blobs.stat(ref, own_digest)
    shared_digest = f"sha256:{hashlib.sha256(shared).hexdigest()}"
    assert _content(registry, ref, shared_digest) == shared  # shared with an active image: stays in standard
    _gc(registry)  # carries out the tombstone of the standard copy
    after = _bytes_under(standard_root)
    assert before - after >= len(own) and _bytes_under(archive_root) >= len(own)
    print(f"standard {before} -> {after} bytes, archive store {_bytes_under(archive_root)} bytes")  # (-s shows it)
    assert list(check(registry.ctx)) == []
    # no plaintext in the archive store
    for directory, _, files in os.walk(archive_root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                assert own[:4096] not in f.read()

    clock.now += 10 * DAY
    assert registry.storage_classes.update(ref, {"imageDigest": old}, "STANDARD")[1] == "ACTIVATING"
    with pytest.raises(ImageArchived, match="being restored"):
        registry.manifests.get(ref, old, record_pull=True)
    registry.storage_classes.run_job(str(_manifest_id(registry, ref, old)))
    assert registry.manifests.get(ref, "old", record_pull=True).status == "ACTIVE"
    assert _content(registry, ref, own_digest) == own  # byte-identical
    _gc(registry)
    assert _bytes_under(archive_root) == 0 or not any(files for _, _, files in os.walk(archive_root))
    assert list(check(registry.ctx)) == []
    details = registry.images.describe_ids(ref, [{"imageTag": "old"}])[0]
    assert details.status == "ACTIVE" and details.last_activated_at == clock.now
    assert details.last_archived_at == clock.now - 10 * DAY
    assert [(e["target-storage-class"], "last-activated-at" in e) for e in _events(registry)] == [
        ("ARCHIVE", False),
        ("STANDARD", True),
    ]
    with registry.ctx.db.read() as conn:  # restored after 10 days: the other 80 of the minimum are charged
        charge = conn.execute(sa.select(archive_charges)).one()
    assert charge.reason == "restore" and charge.byte_seconds == pytest.approx(details.size * 80 * DAY, rel=1e-6)


def _manifest_id(registry: Registry, ref: RepoRef, digest: str) -> int:
    return registry.manifests.get(ref, digest).id


def test_push_again_restores_and_archived_children_and_layers_are_refused(tiered: Registry) -> None:
    registry = tiered
    ref = RepoRef(ACCOUNT, "arch/repush")
    layer = os.urandom(50_000)
    digest = push_image(registry, ref, "v1", [layer])
    payload = registry.manifests.get(ref, digest).payload
    registry.storage_classes.update(ref, {"imageDigest": digest}, "ARCHIVE")
    registry.storage_classes.run_job(str(_manifest_id(registry, ref, digest)))
    with pytest.raises(ManifestBlobUnknown, match="archive storage class"):  # a client that skipped the upload
        registry.manifests.put(ref, "v1", payload, None)
    # What skopeo does: HEAD says 404 (archived), so it uploads the layers again, then puts the manifest.
    config = json.loads(payload)["config"]
    for descriptor in [config, *json.loads(payload)["layers"]]:
        with registry.ctx.db.read() as conn:
            tier = conn.execute(sa.select(blobs.c.tier).where(blobs.c.digest == descriptor["digest"])).scalar()
        assert tier == "archive"
    push_blob(registry, ref, layer)
    with pytest.raises(ManifestBlobUnknown):  # the config is still archived
        registry.manifests.put(ref, "v1", payload, None)
    keys = registry.repositories.account_keys  # (the object's key, as the account's wrap gives it)
    archived = keys.view(keys.object_key(None, config["digest"]), registry.ctx.archive_storage)
    with archived.reader(_archive_path(registry, config["digest"])) as f:
        push_blob(registry, ref, f.read())
    registry.manifests.put(ref, "v1", payload, None)
    assert registry.manifests.get(ref, "v1", record_pull=True).status == "ACTIVE"
    _gc(registry)
    assert list(check(registry.ctx)) == []
    registry.storage_classes.update(ref, {"imageDigest": digest}, "ARCHIVE")
    assert registry.storage_classes.update(ref, {"imageDigest": digest}, "STANDARD")[1] == "ACTIVATING"
    with pytest.raises(StorageClassUpdateNotSupported):  # a restore in flight cannot be archived
        registry.storage_classes.update(ref, {"imageDigest": digest}, "ARCHIVE")


def _archive_path(registry: Registry, digest: str) -> str:
    with registry.ctx.db.read() as conn:
        return conn.execute(sa.select(blobs.c.archive_path).where(blobs.c.digest == digest)).scalar_one()


def test_lifecycle_transition_then_expiry_and_metering_of_both_tiers(tiered: Registry) -> None:
    registry, clock = tiered, tiered.ctx.clock
    registry.settings.metering_interval = 3600
    ref = RepoRef(ACCOUNT, "arch/life")
    old = push_image(registry, ref, "old-1", [os.urandom(20_000)])
    clock.now += 40 * DAY
    push_image(registry, ref, "current", [os.urandom(10_000)])
    registry.lifecycle.put(ref, ARCHIVE_THEN_EXPIRE)

    (run,) = LifecycleRunner(registry).run()
    assert [e["imageDigest"] for e in run.archived] == [old] and run.expired == []
    registry.storage_classes.run_job(str(_manifest_id(registry, ref, old)))
    assert registry.images.describe_ids(ref, [{"imageDigest": old}])[0].status == "ARCHIVED"
    ids, _ = registry.images.list_ids(ref, image_status="ARCHIVED")
    assert ids == [{"imageDigest": old, "imageTag": "old-1"}]
    assert [i["imageTag"] for i in registry.images.list_ids(ref)[0]] == ["current"]  # default: ACTIVE only

    registry.metering.sample(clock.now)
    (repo,) = registry.metering.stored(ACCOUNT).repositories
    assert repo.archive_physical_bytes > 20_000 and repo.physical_bytes < repo.logical_bytes + 1  # both tiers apart

    clock.now += 89 * DAY  # not yet 90 days in the archive
    assert LifecycleRunner(registry).run()[0].expired == []
    clock.now += 2 * DAY
    (run,) = LifecycleRunner(registry).run()
    assert [e["imageDigest"] for e in run.expired] == [old]
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(archive_charges)).scalar() == 0  # kept 90 days
    from datetime import UTC, datetime

    month = datetime.fromtimestamp(clock.now - 91 * DAY, UTC)
    report = build_report(registry.metering, month.year, month.month, ACCOUNT)
    archive = report["accounts"][0]["totals"]["archive"]
    assert archive["byte_seconds"] > 0 and archive["cost"] > 0


def test_early_delete_is_charged_the_rest_of_the_90_days(tiered: Registry) -> None:
    registry, clock = tiered, tiered.ctx.clock
    ref = RepoRef(ACCOUNT, "arch/early")
    digest = push_image(registry, ref, "v", [os.urandom(5_000)])
    registry.storage_classes.update(ref, {"imageDigest": digest}, "ARCHIVE")
    registry.storage_classes.run_job(str(_manifest_id(registry, ref, digest)))
    clock.now += 30 * DAY
    registry.manifests.delete(ref, digest)
    with registry.ctx.db.read() as conn:
        charge = conn.execute(sa.select(archive_charges)).one()
    assert charge.reason == "delete" and charge.byte_seconds > 0
    _gc(registry)  # the archive copy goes with the blob
    assert list(check(registry.ctx)) == []
    assert not any(files for _, _, files in os.walk(os.path.join(registry.settings.data_dir, "archive-store")))


def test_kms_repositories_refuse_archiving_and_open_wires_the_archive_store(registry, settings, tmp_path) -> None:
    from soko.iam.service import Identity
    from soko.kms.service import KeyService
    from soko.registry.capabilities import NotCarriedOut
    from tests.kms.test_service import ROOT

    kms = KeyService(registry.ctx, Identity(registry.ctx))
    registry.encryption.attach(kms)
    ref = RepoRef(ACCOUNT, "arch/kms")
    registry.repositories.create(ref, encryption_type="KMS", kms_key=kms.create_key(ROOT, "archive").key_id)
    digest = push_image(registry, ref, "v1", [os.urandom(1000)])
    with pytest.raises(NotCarriedOut, match="encryptionType KMS"):  # its content is stored under its KMS key
        registry.storage_classes.update(ref, {"imageDigest": digest}, "ARCHIVE")
    with pytest.raises(NotCarriedOut):  # a transition rule would archive nothing: refused, not stored
        registry.lifecycle.put(ref, ARCHIVE_THEN_EXPIRE)
    settings.archive_storage_url = f"file://{tmp_path / 'cold'}"
    opened = Registry.open(settings)
    try:
        assert isinstance(opened.ctx.archive_storage, SealedDriver) and opened.ctx.archive is not None
        assert opened.ctx.store_for("archive/blobs/sha256/ab/abc.1") is opened.ctx.archive
        assert opened.ctx.store_for("blobs/sha256/ab/abc") is opened.ctx.storage
    finally:
        opened.close()


def test_a_restore_requested_while_the_archive_job_moves_content_is_carried_out(tiered: Registry, monkeypatch) -> None:
    """The job's own row is re-enqueued by a request committed during its run: it must not be forgotten then (the
    image stayed ACTIVATING for good, its content in the archive tier)."""
    registry = tiered
    ref = RepoRef(ACCOUNT, "arch/race")
    layer = os.urandom(20_000)
    digest = push_image(registry, ref, "v1", [layer])
    registry.storage_classes.update(ref, {"imageDigest": digest}, "ARCHIVE")
    move = registry.storage_classes.to_archive
    restored: list[str] = []

    def move_then_restore(blob: str) -> bool:  # a client's restore lands right after the job moved a blob
        moved = move(blob)
        if not restored:
            restored.append(registry.storage_classes.update(ref, {"imageDigest": digest}, "STANDARD")[1])
        return moved

    monkeypatch.setattr(registry.storage_classes, "to_archive", move_then_restore)
    registry.storage_classes.run_job(str(_manifest_id(registry, ref, digest)))
    assert restored == ["ACTIVATING"]
    assert registry.manifests.get(ref, digest, record_pull=True).status == "ACTIVE"
    assert _content(registry, ref, f"sha256:{hashlib.sha256(layer).hexdigest()}") == layer


def test_a_kms_repository_serves_its_own_copy_of_content_archived_elsewhere(registry) -> None:
    """A layer archived with an AES256 repository's images, then pushed to a KMS repository: that repository stores
    its own copy under its key and serves it (it answered 404 BlobArchived on an ACTIVE image)."""
    from soko.iam.service import Identity
    from soko.kms.service import KeyService
    from tests.kms.test_service import ROOT

    kms = KeyService(registry.ctx, Identity(registry.ctx))
    registry.encryption.attach(kms)
    plain, keyed = RepoRef(ACCOUNT, "arch/plain"), RepoRef(ACCOUNT, "arch/keyed")
    registry.repositories.create(keyed, encryption_type="KMS", kms_key=kms.create_key(ROOT, "archive").key_id)
    layer = os.urandom(5000)
    layer_digest = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    archived = push_image(registry, plain, "v1", [layer])
    registry.storage_classes.update(plain, {"imageDigest": archived}, "ARCHIVE")
    registry.storage_classes.run_job(str(_manifest_id(registry, plain, archived)))
    push_image(registry, keyed, "v1", [layer])
    assert _content(registry, keyed, layer_digest) == layer
    assert registry.images.linked_blobs(keyed, [layer_digest]) == {layer_digest: len(layer)}
    assert registry.images.linked_blobs(keyed, [layer_digest], archived=True) == {}
    with pytest.raises(BlobArchived):  # the AES256 repository still reads the archived copy
        registry.blobs.stat(plain, layer_digest)
    _gc(registry)
    assert list(check(registry.ctx)) == [] and _content(registry, keyed, layer_digest) == layer
