"""Garbage collection on both databases: what goes, what must stay, and races with pushes."""

from __future__ import annotations

import os
import random
import threading

import sqlalchemy as sa

from soko.errors import SokoError
from soko.meta.schema import blobs, repository_blobs
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from soko.storage import PathNotFound
from soko.storage.paths import blob_path, trash_path
from tests.domain import push_blob, push_image
from tests.oci.helpers import sha256

ACCOUNT = "000000000000"


def stored(registry, digest: str) -> bool:
    try:
        registry.ctx.storage.stat(blob_path(digest))
        return True
    except PathNotFound:
        return False


def blob_rows(registry) -> set[str]:
    with registry.ctx.db.read() as conn:
        return set(conn.execute(sa.select(blobs.c.digest)).scalars())


def test_an_uploaded_blob_no_manifest_uses_is_reclaimed_after_the_grace_period(registry) -> None:
    ref = RepoRef(ACCOUNT, "gc/orphan")
    digest = push_blob(registry, ref, b"orphan layer")
    report = registry.gc.run(grace_period=3600)
    assert report.blobs_deleted == 0 and stored(registry, digest)  # still within its grace period
    report = registry.gc.run(grace_period=0)
    assert report.links_deleted == 1 and report.blobs_deleted == 1
    assert not stored(registry, digest) and digest not in blob_rows(registry)


def test_referenced_blobs_stay_and_deleting_the_manifest_frees_them(registry) -> None:
    ref = RepoRef(ACCOUNT, "gc/app")
    layer = os.urandom(1000)
    manifest = push_image(registry, ref, "v1", [layer])
    layer_digest = sha256(layer)
    assert registry.gc.run(grace_period=0).blobs_deleted == 0
    assert stored(registry, layer_digest)
    registry.manifests.delete(ref, manifest)
    assert registry.gc.run(grace_period=3600).blobs_deleted == 0  # the manifest-delete review is not due yet
    report = registry.gc.run(grace_period=0)
    assert report.blobs_deleted == 2  # layer and config
    assert not stored(registry, layer_digest)
    assert list(check(registry.ctx)) == []


def test_a_blob_shared_with_another_repository_survives(registry) -> None:
    layer = os.urandom(500)
    a, b = RepoRef(ACCOUNT, "gc/a"), RepoRef(ACCOUNT, "gc/b")
    manifest_a = push_image(registry, a, "v1", [layer])
    push_image(registry, b, "v1", [layer])
    registry.manifests.delete(a, manifest_a)
    registry.gc.run(grace_period=0)
    layer_digest = sha256(layer)
    assert stored(registry, layer_digest)
    assert registry.blobs.stat(b, layer_digest).size == 500
    assert list(check(registry.ctx)) == []


def test_dry_run_deletes_nothing(registry) -> None:
    digest = push_blob(registry, RepoRef(ACCOUNT, "gc/dry"), b"x" * 10)
    report = registry.gc.run(grace_period=0, dry_run=True)
    assert report.blobs_deleted == 1 and digest in report.deleted_digests
    assert stored(registry, digest) and digest in blob_rows(registry)


def test_uploads_in_flight_are_kept_and_expired_ones_reclaimed(registry) -> None:
    ref = RepoRef(ACCOUNT, "gc/uploads")
    state = registry.uploads.start(ref)
    writer = registry.uploads.begin_chunk(ref, state.id, 0)
    writer.write(b"half a layer")
    writer.finish()
    registry.gc.run(grace_period=0)
    assert registry.uploads.status(ref, state.id).size == 12  # an open session is never touched
    registry.settings.upload_expiry = 0
    report = registry.gc.run(grace_period=0)
    assert report.uploads_expired == 1
    try:
        registry.uploads.status(ref, state.id)
        raise AssertionError("expired upload still present")
    except SokoError:
        pass


def test_stray_files_are_swept_and_trash_of_a_crashed_run_is_restored(registry) -> None:
    storage = registry.ctx.storage
    stray = "sha256:" + "ab" * 32
    storage.put_content(blob_path(stray), b"no row points here")
    storage.put_content("uploads/00000000-0000-0000-0000-000000000000/data", b"abandoned")
    ref = RepoRef(ACCOUNT, "gc/trash")
    kept = push_image(registry, ref, "v1", [b"layer"])
    layer_digest = sha256(b"layer")
    # Simulate a collector that died after moving live content to trash, before its transaction committed.
    storage.move(blob_path(layer_digest), trash_path(layer_digest))
    # fsck says where the content is and that the next gc deals with it, rather than calling it missing
    (problem,) = check(registry.ctx)
    assert (problem.kind, problem.subject) == ("in-trash", layer_digest)
    assert "in trash (the next gc restores or removes them)" in problem.message
    report = registry.gc.run(grace_period=0)
    assert report.trash_restored == 1 and stored(registry, layer_digest)
    assert report.stray_files_deleted == 2 and not stored(registry, stray)
    assert registry.manifests.get(ref, kept).digest == kept
    assert list(check(registry.ctx)) == []


def test_concurrent_pushes_deletes_and_gc_never_lose_a_referenced_blob(registry) -> None:
    shared = [os.urandom(256) for _ in range(4)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def pusher(n: int) -> None:
        rng = random.Random(n)
        ref = RepoRef(ACCOUNT, f"gc/race{n % 2}")
        try:
            for i in range(12):
                digest = push_image(registry, ref, f"t{n}-{i % 3}", [rng.choice(shared), os.urandom(64)])
                if rng.random() < 0.5:
                    try:
                        registry.manifests.delete(ref, digest)
                    except SokoError:
                        pass  # still referenced by an index / already gone
        except BaseException as exc:
            errors.append(exc)

    def collector() -> None:
        try:
            while not stop.is_set():
                registry.gc.run(grace_period=0, sweep_storage=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    gc_thread.join()
    # A push whose blobs were collected before its manifest arrived fails cleanly (grace 0); nothing else may fail.
    unexpected = [e for e in errors if "not in repository" not in str(e)]
    assert not unexpected, unexpected
    assert list(check(registry.ctx)) == []
    registry.gc.run(grace_period=0)
    with registry.ctx.db.read() as conn:
        linked = set(conn.execute(sa.select(repository_blobs.c.digest)).scalars())
    assert blob_rows(registry) == linked  # nothing unreferenced survives a run with no grace
    assert list(check(registry.ctx)) == []
