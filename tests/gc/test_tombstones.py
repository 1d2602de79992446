"""GC deletions as committed tombstones (``soko.gc.tombstones``): storage is touched only after the commit, a re-push
of the digest in between keeps its content, and a collector killed mid-execution loses nothing (both databases)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa

from soko.gc import tombstones
from soko.meta.schema import gc_tombstones
from soko.registry.fsck import Progress, check
from soko.registry.models import RepoRef
from tests.domain import push_blob, push_image
from tests.gc.test_collector import ACCOUNT, blob_rows, stored


def tombstone_digests(registry) -> list[str]:
    with registry.ctx.db.read() as conn:
        return sorted(conn.execute(sa.select(gc_tombstones.c.digest)).scalars())


def bury_unreferenced(registry) -> None:
    """The collector's first two phases up to the commit of the row deletions, without executing the tombstones."""
    report = registry.gc.review(grace_period=0)
    registry.gc._delete_blobs(registry.ctx.clock(), False, report, lambda: False)


def test_the_row_goes_in_the_transaction_and_the_content_after_it(registry) -> None:
    ref = RepoRef(ACCOUNT, "gc/tomb")
    digest = push_blob(registry, ref, os.urandom(64))
    bury_unreferenced(registry)
    assert digest not in blob_rows(registry) and tombstone_digests(registry) == [digest]
    assert stored(registry, digest)  # nothing touched storage under the row locks
    progress = Progress()
    assert list(check(registry.ctx, progress=progress)) == [] and progress.tombstones == 1
    done = tombstones.execute(registry.ctx)
    assert (done.deleted, done.voided) == (1, 0)
    assert not stored(registry, digest) and tombstone_digests(registry) == []


def test_a_repush_between_the_commit_and_the_execution_keeps_its_content(registry) -> None:
    ref, other = RepoRef(ACCOUNT, "gc/tomb-a"), RepoRef(ACCOUNT, "gc/tomb-b")
    data = os.urandom(64)
    digest = push_blob(registry, ref, data)
    bury_unreferenced(registry)
    assert tombstone_digests(registry) == [digest]
    assert push_blob(registry, other, data) == digest  # drops the pending tombstone as it commits the new row
    assert tombstone_digests(registry) == []
    report = registry.gc.run(grace_period=3600)
    assert report.tombstones_executed == 0 and stored(registry, digest)
    assert registry.blobs.stat(other, digest).size == 64
    assert list(check(registry.ctx)) == []


def test_a_tombstone_of_a_live_digest_is_voided_not_executed(registry) -> None:
    """A tombstone that meets a blob row again (e.g. a sweep's, racing a push) leaves the content alone."""
    ref = RepoRef(ACCOUNT, "gc/tomb-live")
    digest = push_blob(registry, ref, os.urandom(64))
    with registry.ctx.db.write() as conn:
        tombstones.bury(conn, [(digest, f"blobs/sha256/{digest[7:9]}/{digest[7:]}")], registry.ctx.clock(), "test")
    done = tombstones.execute(registry.ctx)
    assert (done.deleted, done.voided) == (0, 1) and stored(registry, digest)
    assert tombstone_digests(registry) == [] and list(check(registry.ctx)) == []


def test_a_repush_while_the_executor_deletes_the_old_copy_waits_for_it(registry, monkeypatch) -> None:
    """The exact race: the executor has claimed the tombstone and is deleting the object; a completion of the same
    digest must neither move its content in before that delete (it would be deleted) nor fail."""
    ref, other = RepoRef(ACCOUNT, "gc/race-a"), RepoRef(ACCOUNT, "gc/race-b")
    data = os.urandom(4096)
    digest = push_blob(registry, ref, data)
    bury_unreferenced(registry)
    storage = registry.ctx.storage
    real_delete = storage.delete
    deleting, go = threading.Event(), threading.Event()

    def slow_delete(path: str) -> None:
        deleting.set()
        assert go.wait(30)
        real_delete(path)

    monkeypatch.setattr(storage, "delete", slow_delete)
    executor = threading.Thread(target=tombstones.execute, args=(registry.ctx,))
    executor.start()
    assert deleting.wait(30)
    monkeypatch.setattr(storage, "delete", real_delete)  # (the upload's own cleanup)
    pushed: list[str] = []
    pusher = threading.Thread(target=lambda: pushed.append(push_blob(registry, other, data)))
    pusher.start()
    pusher.join(0.5)
    assert pusher.is_alive() and not pushed  # it waits for the claimed tombstone
    go.set()
    executor.join(30)
    pusher.join(30)
    assert pushed == [digest] and stored(registry, digest) and digest in blob_rows(registry)
    assert tombstone_digests(registry) == []
    with registry.blobs.reader(registry.blobs.open(other, digest)) as f:
        assert f.read() == data
    assert list(check(registry.ctx)) == []


_CHILD = """
import json, sys, time
from soko.config import load_settings
from soko.registry import Registry

registry = Registry.open(load_settings(overrides=json.loads(sys.argv[1]), env={}))
storage = registry.ctx.storage
real_delete, deleted = storage.delete, []

def delete(path):
    real_delete(path)
    deleted.append(path)
    if len(deleted) == 2:  # mid-execution: two objects gone, their tombstones (and the rest) still claimed
        open(sys.argv[2], "w").close()
        time.sleep(600)

storage.delete = delete
registry.gc.run(grace_period=0)
"""


def test_a_collector_killed_mid_execution_loses_nothing(registry, settings, tmp_path) -> None:
    ref, again = RepoRef(ACCOUNT, "gc/kill"), RepoRef(ACCOUNT, "gc/kill-again")
    kept_layer = os.urandom(256)
    manifest = push_image(registry, ref, "v1", [kept_layer])
    orphans = {push_blob(registry, ref, data): data for data in (os.urandom(128) for _ in range(6))}
    marker = tmp_path / "mid-execution"
    overrides = {k: getattr(settings, k) for k in ("data_dir", "database_url", "root_access_key_id")}
    overrides["root_secret_access_key"] = settings.root_secret_access_key
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(overrides), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the collector never reached its deletes"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert sum(stored(registry, d) for d in orphans) == 4 and not blob_rows(registry) & set(orphans)
    assert len(tombstone_digests(registry)) == 6  # committed deletions, not carried out
    assert list(check(registry.ctx)) == []  # the killed run left nothing inconsistent
    # One of the deleted blobs is pushed again at once: the dead collector's claim does not hold it up.
    digest, data = next(iter(orphans.items()))
    started = time.monotonic()
    assert push_blob(registry, again, data) == digest
    assert time.monotonic() - started < 10
    report = registry.gc.run(grace_period=3600)  # the next run completes the rest
    assert report.tombstones_executed == 5 and tombstone_digests(registry) == []
    assert stored(registry, digest) and not any(stored(registry, d) for d in orphans if d != digest)
    assert registry.manifests.get(ref, manifest).digest == manifest
    assert list(check(registry.ctx)) == []
