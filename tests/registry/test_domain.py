"""Domain-level behaviour that is hard to reach over HTTP: expiry, cross-process resumption, fsck, pull recording."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa

from soko.crypto.driver import SealedDriver
from soko.errors import DigestInvalid, ImageChanged, ManifestUnknown, RangeNotSatisfiable, SizeInvalid, UploadUnknown
from soko.meta import Database
from soko.meta.schema import manifests, uploads
from soko.registry import Registry
from soko.registry.fsck import check
from soko.registry.models import RepoRef
from soko.registry.uploads import CLAIM_STALE
from soko.storage import FilesystemDriver, PathNotFound
from soko.storage.paths import blob_path, upload_path
from tests.clock import Clock
from tests.domain import push_blob, push_image, stored_content
from tests.oci.helpers import sha256, sha512


def _ref(registry, name: str = "repo") -> RepoRef:
    return RepoRef(registry.settings.account_id, name)


DIGESTS = {"sha256": sha256, "sha512": sha512}


def _chunk(registry, ref: RepoRef, upload_id: str, data: bytes, start: int | None = None):
    writer = registry.uploads.begin_chunk(ref, upload_id, start)
    try:
        writer.write(data)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def _read(registry, path: str) -> bytes:
    return stored_content(registry, path)


def test_upload_expiry(registry):
    ref = _ref(registry)
    old = registry.uploads.start(ref)
    _chunk(registry, ref, old.id, b"abandoned")
    assert _read(registry, upload_path(old.id)) == b"abandoned"
    assert registry.uploads.expire(older_than=3600) == 0  # not old enough
    assert registry.uploads.status(ref, old.id).size == 9
    assert registry.uploads.expire(older_than=0) == 1
    with pytest.raises(UploadUnknown):
        registry.uploads.status(ref, old.id)
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(uploads)).scalar() == 0
    with pytest.raises(PathNotFound):
        registry.ctx.storage.stat(upload_path(old.id))
    with pytest.raises(UploadUnknown):
        registry.uploads.complete(ref, old.id, sha256(b"abandoned"))
    assert registry.uploads.expire(older_than=0) == 0


def test_expiry_keeps_recent_uploads(registry):
    ref = _ref(registry)
    registry.uploads.start(ref)
    registry.uploads.start(ref)
    assert registry.uploads.expire() == 0  # the default expiry is a day


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_resume_in_another_process(registry, algorithm):
    ref = _ref(registry)
    data = b"first part|" + b"second part"
    state = registry.uploads.start(ref)
    _chunk(registry, ref, state.id, data[:11], 0)
    # "another process": this process's running hashes are gone
    registry.uploads._hashes = type(registry.uploads._hashes)()
    assert registry.uploads.status(ref, state.id).size == 11
    _chunk(registry, ref, state.id, data[11:], 11)
    registry.uploads._hashes = type(registry.uploads._hashes)()
    with pytest.raises(DigestInvalid):
        registry.uploads.complete(ref, state.id, DIGESTS[algorithm](data + b"x"))
    info = registry.uploads.complete(ref, state.id, DIGESTS[algorithm](data))
    assert info.size == len(data)
    assert _read(registry, blob_path(info.digest)) == data
    assert registry.blobs.stat(ref, info.digest).size == len(data)
    assert list(check(registry.ctx)) == []


def test_failed_chunk_leaves_no_trailing_bytes(registry):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    _chunk(registry, ref, state.id, b"kept", 0)
    writer = registry.uploads.begin_chunk(ref, state.id, 4)
    writer.write(b"GARBAGE FROM A CUT-OFF CHUNK")
    writer.abort()
    assert registry.uploads.status(ref, state.id).size == 4
    info = registry.uploads.complete(ref, state.id, sha256(b"kept"))
    assert info.size == 4
    assert _read(registry, blob_path(info.digest)) == b"kept"
    assert list(check(registry.ctx)) == []


def test_completion_refuses_an_upload_whose_data_was_lost(registry):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    _chunk(registry, ref, state.id, b"twelve bytes", 0)
    registry.ctx.storage.put_content(upload_path(state.id), b"twelve")  # storage lost the tail
    with pytest.raises(SizeInvalid, match="lost data"):
        registry.uploads.complete(ref, state.id, sha256(b"twelve bytes"))


def test_one_chunk_at_a_time(registry):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    first = registry.uploads.begin_chunk(ref, state.id, 0)
    with pytest.raises(RangeNotSatisfiable):
        registry.uploads.begin_chunk(ref, state.id, 0)
    with pytest.raises(RangeNotSatisfiable):
        registry.uploads.begin_chunk(ref, state.id)
    first.write(b"winner")
    first.finish()
    # the finished chunk moved the size on; a stale start is refused and the next one appends
    with pytest.raises(RangeNotSatisfiable) as exc:
        registry.uploads.begin_chunk(ref, state.id, 0)
    assert exc.value.current_size == 6
    _chunk(registry, ref, state.id, b"!", 6)
    assert registry.uploads.complete(ref, state.id, sha256(b"winner!")).size == 7


@pytest.fixture
def other_node(registry):
    """A second Registry on the same database and storage: another process or node of the same deployment."""
    db = Database(registry.settings.effective_database_url, pool_size=2)
    node = Registry(
        registry.settings, db, SealedDriver(FilesystemDriver(registry.settings.blob_root), registry.ctx.storage.ring)
    )
    yield node
    node.close()


def test_one_writer_across_nodes(registry, other_node):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    first = registry.uploads.begin_chunk(ref, state.id, 0)
    first.write(b"from node one")
    # the other node may neither write a chunk nor complete while node one streams
    with pytest.raises(RangeNotSatisfiable) as exc:
        other_node.uploads.begin_chunk(ref, state.id, 0)
    assert exc.value.current_size == 0
    with pytest.raises(RangeNotSatisfiable):
        other_node.uploads.complete(ref, state.id, sha256(b"from node one"))
    first.finish()
    # the claim ended with the chunk: node two resumes and completes, re-hashing what node one wrote
    _chunk(other_node, ref, state.id, b"+two", 13)
    info = other_node.uploads.complete(ref, state.id, sha256(b"from node one+two"))
    assert _read(registry, blob_path(info.digest)) == b"from node one+two"
    assert list(check(registry.ctx)) == []


def test_post_then_put_on_another_node_hashes_while_streaming(registry, other_node, monkeypatch):
    """POST on one worker, PUT with the whole body on another: nothing to re-read, the hash runs as bytes arrive."""
    ref = _ref(registry)
    state = registry.uploads.start(ref)

    def no_rehash(*args):
        raise AssertionError("the content was read back to hash it")

    monkeypatch.setattr(other_node.uploads, "_rehash", no_rehash)
    _chunk(other_node, ref, state.id, b"whole body", 0)
    assert other_node.uploads.complete(ref, state.id, sha256(b"whole body")).size == 10


def test_claim_of_a_dead_writer_goes_stale(registry, other_node):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    abandoned = registry.uploads.begin_chunk(ref, state.id, 0)  # its process "dies": never finished or aborted
    abandoned.write(b"half")
    now = registry.ctx.clock()
    other_node.ctx.clock = lambda: now + CLAIM_STALE - 1
    with pytest.raises(RangeNotSatisfiable):
        other_node.uploads.begin_chunk(ref, state.id, 0)
    other_node.ctx.clock = lambda: now + CLAIM_STALE + 1
    _chunk(other_node, ref, state.id, b"whole", 0)  # truncates what the dead writer left
    # the dead writer's late finish cannot move the size any more
    with pytest.raises(RangeNotSatisfiable):
        abandoned.finish()
    assert other_node.uploads.complete(ref, state.id, sha256(b"whole")).size == 5


@pytest.fixture
def shared_clock(registry, other_node) -> Clock:
    """One settable clock for both nodes."""
    clock = Clock(registry.ctx.clock())
    registry.ctx.clock = other_node.ctx.clock = clock
    return clock


def test_a_writer_that_stalled_past_the_stale_time_never_writes_again(registry, other_node, shared_clock):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    stalled = registry.uploads.begin_chunk(ref, state.id, 0)
    stalled.write(b"AAAA")
    shared_clock.now += CLAIM_STALE + 1  # its client went quiet; the claim went stale
    _chunk(other_node, ref, state.id, b"BBBB", 0)
    with pytest.raises(RangeNotSatisfiable):
        stalled.write(b"AAAA")  # refused before a byte reaches the file
    stalled.abort()
    info = other_node.uploads.complete(ref, state.id, sha256(b"BBBB"))
    assert _read(registry, blob_path(info.digest)) == b"BBBB"
    assert list(check(registry.ctx)) == []


def test_cancel_while_a_chunk_streams_is_upload_unknown(registry):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    writer = registry.uploads.begin_chunk(ref, state.id, 0)
    writer.write(b"data")
    registry.uploads.cancel(ref, state.id)
    with pytest.raises(UploadUnknown):
        writer.finish()


def test_long_chunk_keeps_its_claim_and_session(registry, other_node, shared_clock):
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    writer = registry.uploads.begin_chunk(ref, state.id, 0)
    for _ in range(12):  # a slow chunk: 12 pieces, 60 s apart (longer than the stale time)
        shared_clock.now += 60
        writer.write(b"x")
        with pytest.raises(RangeNotSatisfiable):
            other_node.uploads.begin_chunk(ref, state.id, 0)
    assert other_node.uploads.expire(older_than=120) == 0  # the heartbeat keeps the session alive
    assert writer.finish().size == 12


def test_completing_a_blob_already_stored_moves_nothing_and_drops_the_upload(registry):
    data = os.urandom(100_000)
    digest = push_blob(registry, _ref(registry, "first"), data)
    path = os.path.join(registry.ctx.storage.inner.root, "sealed", blob_path(digest))  # encrypted at rest
    stored = os.stat(path)
    other = _ref(registry, "second")
    state = registry.uploads.start(other)
    _chunk(registry, other, state.id, data)
    assert registry.uploads.complete(other, state.id, digest).digest == digest
    again = os.stat(path)
    assert (again.st_ino, again.st_mtime_ns) == (stored.st_ino, stored.st_mtime_ns)  # not replaced
    with pytest.raises(PathNotFound):
        registry.ctx.storage.stat(upload_path(state.id))
    assert registry.blobs.stat(other, digest).size == len(data)
    # a wrong digest is still refused, stored blob or not
    state = registry.uploads.start(other)
    _chunk(registry, other, state.id, data + b"!")
    with pytest.raises(DigestInvalid):
        registry.uploads.complete(other, state.id, digest)
    # content lost from storage is put back by the next upload of it
    os.unlink(path)
    assert push_blob(registry, other, data) == digest
    assert _read(registry, blob_path(digest)) == data


def test_fsck_clean_then_finds_corruption(registry):
    ref = _ref(registry)
    good = push_blob(registry, ref, b"good blob")
    corrupt = push_blob(registry, ref, b"will be corrupted")
    missing = push_blob(registry, ref, b"will go missing")
    resized = push_blob(registry, ref, b"will change size")
    big = push_blob(registry, ref, b"sha512 content", "sha512")
    assert list(check(registry.ctx)) == []
    root = os.path.join(registry.ctx.storage.inner.root, "sealed")  # encrypted at rest
    with open(os.path.join(root, blob_path(corrupt)), "r+b") as f:
        f.seek(130)
        f.write(b"W")  # same size, different ciphertext
    os.unlink(os.path.join(root, blob_path(missing)))
    with open(os.path.join(root, blob_path(resized)), "ab") as f:
        f.write(b"+")
    problems = {(p.kind, p.subject) for p in check(registry.ctx)}
    assert problems == {
        ("tampered-blob", corrupt),
        ("missing-blob", missing),
        ("size-mismatch", resized),
    }
    assert all(str(p) for p in check(registry.ctx))
    # without re-hashing only the cheap checks run
    assert {p.kind for p in check(registry.ctx, rehash=False)} == {"missing-blob", "size-mismatch"}
    assert good and big


def test_pull_recording(registry):
    ref = _ref(registry)
    config, layer = b'{"os":"linux"}', b"layer"
    for data in (config, layer):
        push_blob(registry, ref, data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}
        ],
    }
    payload = json.dumps(manifest).encode()
    result = registry.manifests.put(ref, "v1", payload, "application/vnd.oci.image.manifest.v1+json")
    assert result.digest == sha256(payload)

    def last_pulled():
        with registry.ctx.db.read() as conn:
            return conn.execute(
                sa.select(manifests.c.last_pulled_at).where(manifests.c.digest == result.digest)
            ).scalar()

    registry.manifests.flush_pulls()
    assert last_pulled() is None
    record = registry.manifests.get(ref, "v1")  # not recorded
    assert record.payload == payload
    assert registry.manifests.flush_pulls() == 0
    assert last_pulled() is None
    before = registry.ctx.clock()
    registry.manifests.get(ref, "v1", record_pull=True)
    registry.manifests.get(ref, result.digest, record_pull=True)
    assert registry.manifests.flush_pulls() == 1
    pulled = last_pulled()
    assert pulled is not None and pulled >= before - 1
    assert registry.manifests.flush_pulls() == 0


def _hold_claim(registry, upload_id: str, token: str) -> None:
    with registry.ctx.db.write() as conn:
        conn.execute(
            sa.update(uploads).where(uploads.c.id == upload_id).values(writer=token, writer_seen=registry.ctx.clock())
        )


def test_claims_of_dead_processes_on_this_node_are_void_at_once(registry):
    """kill -9 mid-chunk leaves the claim in the row; a process of this node that no longer exists (or whose pid now
    belongs to another process) holds nothing. Live processes, and other nodes until the heartbeat is stale, do."""
    import subprocess

    from soko import process_identity

    registry.ctx.clock = clock = Clock(1_000_000.0)
    ref = _ref(registry)
    state = registry.uploads.start(ref)
    node = process_identity.node()
    gone = subprocess.Popen(["true"])
    gone.wait()
    me = os.getpid()
    for holder in (f"{node}.{gone.pid}.1.dead", f"{node}.{me}.1.{'reused-pid'}"):
        _hold_claim(registry, state.id, holder)
        writer = registry.uploads.begin_chunk(ref, state.id, None)  # used to be 416 for CLAIM_STALE seconds
        writer.abort()
    for holder in (process_identity.new_token(), f"{'0' * 16}.{me}.1.other-node"):
        _hold_claim(registry, state.id, holder)
        with pytest.raises(RangeNotSatisfiable, match="another request is writing"):
            registry.uploads.begin_chunk(ref, state.id, None)
    clock.now += CLAIM_STALE + 1  # the other node's writer stopped its heartbeat
    _chunk(registry, ref, state.id, b"resumed", 0)


def test_lifecycle_expiry_skips_an_image_retagged_since_the_evaluation(registry) -> None:
    """The rule chose the image with the tags it had then; a tag pushed onto it since makes it another decision."""
    ref = RepoRef(registry.settings.account_id, "expire/retagged")
    digest = push_image(registry, ref, "old", [b"a layer"])
    record = registry.manifests.get(ref, digest)
    registry.manifests.put(ref, "prod", record.payload, record.media_type)  # tagged after the evaluation
    with pytest.raises(ImageChanged):
        registry.manifests.expire(ref, digest, 1, ["old"])
    assert registry.manifests.get(ref, "prod").digest == digest  # still there, both tags
    registry.manifests.expire(ref, digest, 1, ["prod", "old"])  # what it is now: expired
    with pytest.raises(ManifestUnknown):
        registry.manifests.get(ref, digest)
