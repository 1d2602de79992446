"""The collector's set-based batches: mixed batches, duplicate reviews, late references, locks and deadlocks."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from soko.gc import collector, tombstones
from soko.meta.schema import gc_link_reviews, manifest_blobs, manifests, repositories, repository_blobs
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from tests.clock import Clock
from tests.domain import push_blob, push_image
from tests.gc.test_collector import ACCOUNT, blob_rows, stored
from tests.oci.helpers import image_manifest, sha256


@pytest.fixture
def small_batches(monkeypatch) -> None:
    """Batches of 2, so a handful of rows spans several batches (and a batch mixes outcomes)."""
    monkeypatch.setattr(collector, "BATCH", 2)


def links(registry) -> set[tuple[str, str]]:
    with registry.ctx.db.read() as conn:
        return {
            (name, digest)
            for name, digest in conn.execute(
                sa.select(repositories.c.name, repository_blobs.c.digest).join(
                    repositories, repositories.c.id == repository_blobs.c.repository_id
                )
            )
        }


def queued_reviews(registry) -> list[tuple[int, str]]:
    with registry.ctx.db.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(gc_link_reviews.c.id, gc_link_reviews.c.digest).order_by(gc_link_reviews.c.id)
            )
        ]


def repository_id(registry, name: str) -> int:
    with registry.ctx.db.read() as conn:
        return conn.execute(sa.select(repositories.c.id).where(repositories.c.name == name)).scalar_one()


def fake_deadlock() -> sa.exc.OperationalError:
    class Orig(Exception):
        sqlstate = "40P01"

    return sa.exc.OperationalError("SELECT …", {}, Orig("deadlock detected"))


def test_batches_mixing_referenced_and_unreferenced_links_delete_exactly_the_unreferenced(
    registry, small_batches
) -> None:
    a, b = RepoRef(ACCOUNT, "gc/mix-a"), RepoRef(ACCOUNT, "gc/mix-b")
    shared, own = os.urandom(300), os.urandom(300)
    push_image(registry, a, "v1", [shared, own])  # config + 2 layers, all referenced in a
    orphans = [push_blob(registry, a, os.urandom(100)) for _ in range(3)]
    push_blob(registry, b, shared)  # linked in b, referenced by nothing there; a still uses the blob
    kept = links(registry) - {("gc/mix-a", d) for d in orphans} - {("gc/mix-b", sha256(shared))}
    assert len(queued_reviews(registry)) == 7  # one per upload

    dry = registry.gc.run(grace_period=0, dry_run=True)
    assert (dry.links_deleted, dry.blobs_deleted) == (4, 3)
    assert sorted(dry.deleted_digests) == sorted(orphans)
    assert len(queued_reviews(registry)) == 7 and all(stored(registry, d) for d in orphans)

    report = registry.gc.run(grace_period=0)
    assert (report.links_deleted, report.blobs_deleted) == (4, 3)
    assert sorted(report.deleted_digests) == sorted(orphans)
    assert links(registry) == kept
    assert not any(stored(registry, d) for d in orphans) and not blob_rows(registry) & set(orphans)
    assert stored(registry, sha256(shared)) and stored(registry, sha256(own))
    assert queued_reviews(registry) == []
    assert list(check(registry.ctx)) == []


def test_a_blob_referenced_again_between_queueing_and_review_stays(registry, small_batches) -> None:
    ref = RepoRef(ACCOUNT, "gc/again")
    layer = os.urandom(200)
    first = push_image(registry, ref, "v1", [layer])
    registry.manifests.delete(ref, first)  # queues manifest-delete reviews of the config and the layer links
    second = push_image(registry, ref, "v2", [layer])  # same layer (new config): referenced again before review
    report = registry.gc.run(grace_period=0)
    # Only the first image's config goes; the layer's link was re-checked under its lock and kept.
    assert (report.links_deleted, report.blobs_deleted) == (1, 1)
    assert stored(registry, sha256(layer)) and ("gc/again", sha256(layer)) in links(registry)
    assert registry.manifests.get(ref, second).digest == second
    assert queued_reviews(registry) == []
    assert list(check(registry.ctx)) == []


def test_several_reviews_of_one_link_are_answered_once(registry, small_batches) -> None:
    ref = RepoRef(ACCOUNT, "gc/dup")
    data = os.urandom(64)
    for _ in range(3):
        digest = push_blob(registry, ref, data)  # each upload queues a review of the same link
    other = push_blob(registry, ref, os.urandom(64))
    assert len(queued_reviews(registry)) == 4
    dry = registry.gc.run(grace_period=0, dry_run=True)  # the dry run meets the link in two batches
    assert (dry.links_deleted, dry.blobs_deleted) == (2, 2)
    report = registry.gc.run(grace_period=0)
    assert (report.links_deleted, report.blobs_deleted) == (2, 2)
    assert sorted(report.deleted_digests) == sorted([digest, other])
    assert queued_reviews(registry) == []


def test_reviews_not_yet_due_stay_queued(registry) -> None:
    ref = RepoRef(ACCOUNT, "gc/not-due")
    digest = push_blob(registry, ref, b"young")
    report = registry.gc.run(grace_period=3600)
    assert report.links_deleted == 0 and len(queued_reviews(registry)) == 1
    assert ("gc/not-due", digest) in links(registry)


def test_a_link_batch_that_loses_a_deadlock_is_left_for_the_next_run(registry, small_batches, monkeypatch) -> None:
    ref = RepoRef(ACCOUNT, "gc/deadlock-links")
    digests = [push_blob(registry, ref, os.urandom(32)) for _ in range(3)]
    real = collector.GarbageCollector._doom_links
    calls = []

    def first_batch_deadlocks(self, conn, batch, cutoff, dry_run):
        calls.append(batch)
        if len(calls) == 1:
            real(self, conn, batch, cutoff, dry_run)  # takes its locks, deletes its links… then loses
            raise fake_deadlock()
        return real(self, conn, batch, cutoff, dry_run)

    monkeypatch.setattr(collector.GarbageCollector, "_doom_links", first_batch_deadlocks)
    report = registry.gc.run(grace_period=0)
    assert report.links_deleted == 1 and report.blobs_deleted == 1  # the second batch only
    assert len(queued_reviews(registry)) == 2  # the lost batch's reviews and links are untouched
    assert {d for _, d in links(registry)} == set(digests) - set(report.deleted_digests)
    monkeypatch.undo()
    report = registry.gc.run(grace_period=0)
    assert report.links_deleted == 2 and report.blobs_deleted == 2
    assert queued_reviews(registry) == [] and not blob_rows(registry) & set(digests)


def test_a_blob_batch_that_fails_leaves_its_rows_and_content(registry, small_batches, monkeypatch) -> None:
    ref = RepoRef(ACCOUNT, "gc/deadlock-blobs")
    digests = [push_blob(registry, ref, os.urandom(32)) for _ in range(2)]
    real_bury = tombstones.bury
    buried = []

    def second_batch_deadlocks(conn, entries, now, reason) -> None:
        buried.append(entries)
        if len(buried) == 2:
            raise fake_deadlock()
        real_bury(conn, entries, now, reason)

    monkeypatch.setattr(collector, "BATCH", 1)
    monkeypatch.setattr(tombstones, "bury", second_batch_deadlocks)
    report = registry.gc.run(grace_period=0)
    assert report.links_deleted == 2 and report.blobs_deleted == 1 and report.tombstones_executed == 1
    (lost,) = set(digests) - set(report.deleted_digests)
    assert stored(registry, lost) and lost in blob_rows(registry)  # the rolled-back batch kept row and content
    monkeypatch.undo()
    report = registry.gc.run(grace_period=0)
    assert report.deleted_digests == [lost] and not any(stored(registry, d) for d in digests)
    assert list(check(registry.ctx)) == []


def test_a_manifest_committed_while_the_collector_waits_for_the_link_keeps_it(registry) -> None:
    """The reference check runs after the locks are granted, so it sees a push that held the link meanwhile."""
    ref = RepoRef(ACCOUNT, "gc/late-push")
    digest = push_blob(registry, ref, b"late layer")
    repo_id = repository_id(registry, ref.name)
    db = registry.ctx.db
    reports: list = []
    gc_thread = threading.Thread(target=lambda: reports.append(registry.gc.run(grace_period=0, sweep_storage=False)))
    with db.write() as conn:
        if not db.is_sqlite:  # as a manifest push does; on SQLite this transaction's write lock holds everyone
            conn.execute(
                sa.select(repository_blobs.c.digest)
                .where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest)
                .with_for_update(read=True)
            )
        gc_thread.start()
        time.sleep(0.5)
        assert gc_thread.is_alive()  # waiting for the lock
        manifest_id = conn.execute(
            sa.insert(manifests)
            .values(
                repository_id=repo_id,
                digest="sha256:" + "5" * 64,
                media_type="application/vnd.oci.image.manifest.v1+json",
                payload=b"{}",
                image_size=10,
                pushed_at=registry.ctx.clock(),
            )
            .returning(manifests.c.id)
        ).scalar_one()
        conn.execute(sa.insert(manifest_blobs).values(manifest_id=manifest_id, digest=digest))
    gc_thread.join(60)
    assert not gc_thread.is_alive()
    (report,) = reports
    assert report.links_deleted == 0 and report.blobs_deleted == 0
    assert stored(registry, digest) and (ref.name, digest) in links(registry)
    assert queued_reviews(registry) == []  # answered: the link is referenced


def test_reviews_another_collector_holds_are_skipped_not_waited_for(registry) -> None:
    if registry.ctx.db.is_sqlite:
        pytest.skip("SQLite serialises writers; there are no row locks to skip")
    ref = RepoRef(ACCOUNT, "gc/skip-locked")
    data = os.urandom(50)
    digest = push_blob(registry, ref, data)
    push_blob(registry, ref, data)  # a second review of the same link
    (held_id, _), _ = queued_reviews(registry)
    reports: list = []
    with registry.ctx.db.write() as conn:
        conn.execute(sa.select(gc_link_reviews.c.id).where(gc_link_reviews.c.id == held_id).with_for_update())
        gc_thread = threading.Thread(target=lambda: reports.append(registry.gc.run(grace_period=0)))
        gc_thread.start()
        gc_thread.join(30)
        assert not gc_thread.is_alive(), "the collector waited for a review another transaction holds"
    (report,) = reports
    assert report.links_deleted == 1 and report.blobs_deleted == 1 and report.deleted_digests == [digest]
    assert queued_reviews(registry) == [(held_id, digest)]  # left to its holder
    assert registry.gc.run(grace_period=0).links_deleted == 0  # the link is gone; the review is just dropped
    assert queued_reviews(registry) == []


# ---- a blob uploaded or mounted again into a repository that still links it -------------------------------------
GRACE = 3600.0


@pytest.fixture
def clock(registry) -> Clock:
    clock = Clock(time.time())
    registry.ctx.clock = clock
    return clock


def in_thread(fn: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    """Run ``fn`` on a started thread; whatever it raises lands in ``errors``."""

    def body() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def manifest_of(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps(image_manifest(config, layers)).encode()


def gc_counts(registry, dry_run: bool = False) -> tuple[int, int]:
    report = registry.gc.run(grace_period=GRACE, dry_run=dry_run)
    return report.links_deleted, report.blobs_deleted


def test_a_blob_uploaded_again_shortly_before_its_grace_period_ends_is_kept_until_the_new_one_ends(
    registry, clock
) -> None:
    ref = RepoRef(ACCOUNT, "gc/retry")
    data = os.urandom(100)
    digest = push_blob(registry, ref, data)
    clock.now += GRACE - 60
    assert push_blob(registry, ref, data) == digest  # a client retries its push: the same link, a second review
    (_, first), (second_id, second) = queued_reviews(registry)
    assert first == second == digest
    clock.now += 120  # the first review is due, the second is not
    assert gc_counts(registry, dry_run=True) == (0, 0)
    assert gc_counts(registry) == (0, 0)
    assert ("gc/retry", digest) in links(registry) and stored(registry, digest)
    assert registry.blobs.stat(ref, digest).size == 100
    assert queued_reviews(registry) == [(second_id, digest)]  # the first is answered; the second decides
    clock.now += GRACE  # the second review is due, and still no manifest uses the blob
    assert gc_counts(registry, dry_run=True) == (1, 1)
    report = registry.gc.run(grace_period=GRACE)
    assert (report.links_deleted, report.blobs_deleted, report.deleted_digests) == (1, 1, [digest])
    assert links(registry) == set() and not stored(registry, digest) and digest not in blob_rows(registry)
    assert queued_reviews(registry) == []
    assert list(check(registry.ctx)) == []


def test_a_retried_push_puts_its_manifest_after_the_first_uploads_review_came_due(registry, clock) -> None:
    ref = RepoRef(ACCOUNT, "gc/retry-push")
    config, layer = json.dumps({"architecture": "amd64", "os": "linux"}).encode(), os.urandom(200)
    for blob in (config, layer):
        push_blob(registry, ref, blob)  # the first attempt dies before its manifest
    clock.now += GRACE - 60
    for blob in (config, layer):
        push_blob(registry, ref, blob)  # the retry uploads the blobs again (a client may not HEAD first)…
    clock.now += 120
    assert gc_counts(registry) == (0, 0)  # … the first attempt's reviews come due…
    manifest = registry.manifests.put(ref, "v1", manifest_of(config, [layer]), None).digest  # … and it goes on
    clock.now += GRACE
    assert gc_counts(registry) == (0, 0)  # the retry's reviews: referenced now
    assert stored(registry, sha256(config)) and stored(registry, sha256(layer))
    assert registry.manifests.get(ref, "v1").digest == manifest
    assert queued_reviews(registry) == []
    assert list(check(registry.ctx)) == []


def test_a_blob_mounted_again_shortly_before_its_grace_period_ends_is_kept_until_the_new_one_ends(
    registry, clock
) -> None:
    source, target = RepoRef(ACCOUNT, "gc/mount-source"), RepoRef(ACCOUNT, "gc/mount-target")
    layer = os.urandom(150)
    digest = sha256(layer)
    push_image(registry, source, "v1", [layer])  # the source uses the blob: only the target's link is at stake
    assert registry.blobs.mount(target, digest, source) is not None
    clock.now += GRACE - 60
    assert registry.blobs.mount(target, digest, source) is not None  # mounted again: a second review
    clock.now += 120
    assert gc_counts(registry, dry_run=True) == (0, 0)
    assert gc_counts(registry) == (0, 0)
    assert ("gc/mount-target", digest) in links(registry)
    assert registry.blobs.stat(target, digest).size == 150
    assert [d for _, d in queued_reviews(registry)] == [digest]  # the second mount's
    clock.now += GRACE
    assert gc_counts(registry, dry_run=True) == (1, 0)
    assert gc_counts(registry) == (1, 0)
    assert ("gc/mount-target", digest) not in links(registry) and ("gc/mount-source", digest) in links(registry)
    assert stored(registry, digest) and queued_reviews(registry) == []
    assert list(check(registry.ctx)) == []


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_sweep_leaves_a_link_uploaded_again_after_it_looked(registry, clock, monkeypatch, dry_run) -> None:
    ref = RepoRef(ACCOUNT, "gc/sweep-retry")
    data = os.urandom(80)
    digest = push_blob(registry, ref, data)
    with registry.ctx.db.write() as conn:
        conn.execute(sa.delete(gc_link_reviews))  # a link without a review, as a crash leaves one
    clock.now += GRACE + 60
    gc = collector.GarbageCollector
    real_review_links, real_batch = gc._review_links, gc._batch
    state = {"sweeping": False, "uploaded": False}

    def review_links(self, *args) -> None:
        real_review_links(self, *args)
        state["sweeping"] = True

    def batch(self, dry_run):
        if state["sweeping"] and not state["uploaded"]:
            state["uploaded"] = True
            push_blob(registry, ref, data)  # the retry completes after the sweep picked the link, before its batch
        return real_batch(self, dry_run)

    monkeypatch.setattr(gc, "_review_links", review_links)
    monkeypatch.setattr(gc, "_batch", batch)
    assert gc_counts(registry, dry_run=dry_run) == (0, 0)
    assert state["uploaded"]
    monkeypatch.undo()
    assert ("gc/sweep-retry", digest) in links(registry) and stored(registry, digest)
    assert len(queued_reviews(registry)) == 1
    assert gc_counts(registry) == (0, 0)  # the retry's review is not due yet
    clock.now += GRACE
    assert gc_counts(registry) == (1, 1)
    assert not stored(registry, digest) and queued_reviews(registry) == []


def _link_again(registry, how: str, target: RepoRef, source: RepoRef, data: bytes) -> Callable[[], None]:
    """Start uploading (all but the completion) or mounting ``data`` into ``target`` again; returns the rest."""
    if how == "mount":
        return lambda: registry.blobs.mount(target, sha256(data), source)
    state = registry.uploads.start(target)
    writer = registry.uploads.begin_chunk(target, state.id, 0)
    writer.write(data)
    writer.finish()
    return lambda: registry.uploads.complete(target, state.id, sha256(data))


def _linked_once(registry, how: str, target: RepoRef, source: RepoRef, data: bytes) -> None:
    if how == "mount":
        push_image(registry, source, "v1", [data])
    _link_again(registry, how, target, source, data)()


@pytest.mark.parametrize("how", ["upload", "mount"])
def test_a_link_again_in_flight_when_its_old_review_is_checked_is_kept(registry, clock, monkeypatch, how) -> None:
    """The collector waits for an upload or mount of the digest holding the blob row, then sees its new review."""
    target, source = RepoRef(ACCOUNT, f"gc/in-flight-{how}"), RepoRef(ACCOUNT, f"gc/in-flight-{how}-source")
    data = os.urandom(90)
    _linked_once(registry, how, target, source, data)
    clock.now += GRACE + 60  # the first review is due
    module = sys.modules["soko.kernel.unit_of_work"]  # where uploads and mounts queue their reviews
    real_enqueue = module.enqueue_link_reviews
    queued, release = threading.Event(), threading.Event()

    def enqueue_then_wait(*args) -> None:
        real_enqueue(*args)  # the link (which exists) and the new review are written, not yet committed
        queued.set()
        assert release.wait(60)

    monkeypatch.setattr(module, "enqueue_link_reviews", enqueue_then_wait)
    errors: list[BaseException] = []
    reports: list = []
    linker = in_thread(_link_again(registry, how, target, source, data), errors)
    assert queued.wait(30)
    gc_thread = in_thread(lambda: reports.append(registry.gc.run(grace_period=GRACE, sweep_storage=False)), errors)
    try:
        time.sleep(0.5)
        assert gc_thread.is_alive(), "the collector did not wait for the upload or mount in flight"
    finally:
        release.set()
    linker.join(60)
    gc_thread.join(60)
    assert not errors, errors
    (report,) = reports
    assert (report.links_deleted, report.blobs_deleted) == (0, 0)
    assert (target.name, sha256(data)) in links(registry) and stored(registry, sha256(data))
    assert [d for _, d in queued_reviews(registry)] == [sha256(data)]  # the new review, not due yet
    assert list(check(registry.ctx)) == []


@pytest.mark.parametrize("how", ["upload", "mount"])
def test_an_upload_or_mount_again_while_the_collector_deletes_the_old_link_links_afresh(
    registry, clock, monkeypatch, how
) -> None:
    """The other order: the collector holds the blob row first; the upload or mount waits, then links anew."""
    target, source = RepoRef(ACCOUNT, f"gc/after-{how}"), RepoRef(ACCOUNT, f"gc/after-{how}-source")
    data = os.urandom(90)
    _linked_once(registry, how, target, source, data)
    clock.now += GRACE + 60
    real_young = collector._link_is_young
    locked, release = threading.Event(), threading.Event()

    def young_after_the_locks(cutoff):
        if not locked.is_set():  # built between the lock statements and the check of the first batch
            locked.set()
            assert release.wait(60)
        return real_young(cutoff)

    monkeypatch.setattr(collector, "_link_is_young", young_after_the_locks)
    errors: list[BaseException] = []
    reports: list = []
    link_again = _link_again(registry, how, target, source, data)  # (prepares its upload before the collector runs)
    gc_thread = in_thread(lambda: reports.append(registry.gc.run(grace_period=GRACE, sweep_storage=False)), errors)
    assert locked.wait(30)
    linker = in_thread(link_again, errors)
    try:
        time.sleep(0.5)
        assert linker.is_alive(), "the upload or mount did not wait for the collector's batch"
    finally:
        release.set()
    gc_thread.join(60)
    linker.join(60)
    assert not errors, errors
    (report,) = reports
    assert report.links_deleted == 1  # the old link went; the new one is in place
    # (Whether the blob pass that follows the link batch also took the blob depends on who got its row first:
    # usually the upload or mount waiting for it, else the upload stores the blob anew. Either way it is there now.)
    assert (target.name, sha256(data)) in links(registry) and stored(registry, sha256(data))
    assert registry.blobs.stat(target, sha256(data)).size == 90
    assert [d for _, d in queued_reviews(registry)] == [sha256(data)]
    assert list(check(registry.ctx)) == []
