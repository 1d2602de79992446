"""The collector's set-based batches: mixed batches, duplicate reviews, late references, locks and deadlocks."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
import sqlalchemy as sa

from soko.gc import collector
from soko.meta.schema import gc_link_reviews, manifest_blobs, manifests, repositories, repository_blobs
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from tests.gc.test_collector import ACCOUNT, blob_rows, push_blob, push_image, stored


@pytest.fixture
def small_batches(monkeypatch) -> None:
    """Batches of 2, so a handful of rows spans several batches (and a batch mixes outcomes)."""
    monkeypatch.setattr(collector, "BATCH", 2)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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
    kept = links(registry) - {("gc/mix-a", d) for d in orphans} - {("gc/mix-b", sha(shared))}
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
    assert stored(registry, sha(shared)) and stored(registry, sha(own))
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
    assert stored(registry, sha(layer)) and ("gc/again", sha(layer)) in links(registry)
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

    def first_batch_deadlocks(self, conn, batch, dry_run):
        calls.append(batch)
        if len(calls) == 1:
            real(self, conn, batch, dry_run)  # takes its locks, deletes its links… then loses
            raise fake_deadlock()
        return real(self, conn, batch, dry_run)

    monkeypatch.setattr(collector.GarbageCollector, "_doom_links", first_batch_deadlocks)
    report = registry.gc.run(grace_period=0)
    assert report.links_deleted == 1 and report.blobs_deleted == 1  # the second batch only
    assert len(queued_reviews(registry)) == 2  # the lost batch's reviews and links are untouched
    assert {d for _, d in links(registry)} == set(digests) - set(report.deleted_digests)
    monkeypatch.undo()
    report = registry.gc.run(grace_period=0)
    assert report.links_deleted == 2 and report.blobs_deleted == 2
    assert queued_reviews(registry) == [] and not blob_rows(registry) & set(digests)


def test_a_blob_batch_that_fails_puts_the_content_it_trashed_back(registry, small_batches, monkeypatch) -> None:
    ref = RepoRef(ACCOUNT, "gc/deadlock-blobs")
    digests = [push_blob(registry, ref, os.urandom(32)) for _ in range(2)]
    storage = registry.ctx.storage
    real_move = storage.move
    moves = []

    def second_trash_move_deadlocks(src: str, dst: str) -> None:
        if dst.startswith("trash/"):
            moves.append(src)
            if len(moves) == 2:
                raise fake_deadlock()
        real_move(src, dst)

    monkeypatch.setattr(storage, "move", second_trash_move_deadlocks)
    report = registry.gc.run(grace_period=0)
    assert report.links_deleted == 2 and report.blobs_deleted == 0
    assert all(stored(registry, d) for d in digests) and blob_rows(registry) >= set(digests)
    monkeypatch.undo()
    report = registry.gc.run(grace_period=0)
    assert report.blobs_deleted == 2 and not any(stored(registry, d) for d in digests)
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
