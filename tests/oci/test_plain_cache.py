"""The plaintext blob cache (soko.storage.plain_cache) through real HTTP: pushes fill it, pulls are served from it
(whole and Range), a pull fills it when it misses, a cut or stray file is never served, concurrent fills of one
digest make one entry, a tiny budget evicts, deleted blobs and disabled keys are not served from it, and the
directory is private memory."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from soko.storage.paths import blob_path
from soko.storage.plain_cache import MAX_HELD_UPLOADS, CacheRefused, PlainCache, open_for, sweep_abandoned
from tests.conftest import serve
from tests.oci.helpers import assert_oci_error, push_blob, sha256, start_upload

MiB = 1 << 20
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # nothing here depends on the engine


@pytest.fixture
def cache(server):
    cache = server.registry.ctx.plain_cache
    assert cache is not None  # on by default: /dev/shm is a tmpfs here
    cache.keep_recent = 0.0  # (entries just used are otherwise safe from eviction for a moment)
    return cache


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _sealed_file(server, digest: str) -> str:
    return os.path.join(server.registry.settings.blob_root, "sealed", blob_path(digest))


@sqlite_only
def test_a_push_fills_the_cache_and_pulls_are_served_from_it(server, client, cache):
    data = os.urandom(3 * MiB + 123)
    digest = push_blob(client, "repo", data)
    entry = cache.path(None, digest)
    assert os.path.getsize(entry) == len(data)  # filled by the push: the first pull reads memory
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600
    for directory in (cache.root, os.path.dirname(entry)):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert not cache.root.startswith(server.registry.settings.data_dir)
    # The sealed copy gone: what answers now can only be the cache (the row still says the blob is there).
    os.unlink(_sealed_file(server, digest))
    assert client.get(f"/v2/repo/blobs/{digest}").content == data
    r = client.get(f"/v2/repo/blobs/{digest}", headers={"Range": "bytes=1000-2000999"})
    assert r.status_code == 206 and r.content == data[1000:2001000]
    assert r.headers["Content-Range"] == f"bytes 1000-2000999/{len(data)}"


@sqlite_only
def test_a_completion_that_reads_the_upload_back_fills_from_that_read(server, client, cache):
    data = os.urandom(2 * MiB)
    location = start_upload(client, "repo")
    r = client.patch(location, content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    server.registry.uploads._hashes.drop(location.rsplit("/", 1)[1])  # as when the PUT reaches another worker
    digest = sha256(data)
    assert client.put(location, params={"digest": digest}).status_code == 201
    assert _read(cache.path(None, digest)) == data
    assert [n for n in os.listdir(cache.root) if n.startswith(".up-")] == []  # the streamed copy, unverified: gone


@sqlite_only
def test_a_pull_fills_what_is_missing_and_never_serves_a_cut_file(server, client, cache):
    server.registry.settings.plaintext_cache_on_push = False
    data = os.urandom(2 * MiB + 7)
    digest = push_blob(client, "repo", data)
    entry = cache.path(None, digest)
    assert not os.path.exists(entry)
    assert client.get(f"/v2/repo/blobs/{digest}", headers={"Range": "bytes=5-9"}).content == data[5:10]
    assert not os.path.exists(entry)  # a range does not fill
    assert client.get(f"/v2/repo/blobs/{digest}").content == data
    assert _read(entry) == data  # decrypted once, verified, installed
    with open(entry, "r+b") as f:  # cut (a crash, a full tmpfs, someone's truncate): never sent
        f.truncate(MiB)
    assert client.get(f"/v2/repo/blobs/{digest}").content == data
    assert _read(entry) == data  # dropped and filled again
    # What a filler that died leaves (its lock died with it) neither blocks a fill nor stays.
    os.unlink(entry)
    stale = os.path.join(cache.root, f".fill-aes256-sha256-{digest.split(':')[1]}")
    with open(stale, "wb") as f:
        f.write(data[: MiB // 2])
    assert client.get(f"/v2/repo/blobs/{digest}").content == data
    assert _read(entry) == data
    assert not os.path.exists(stale)


@sqlite_only
def test_concurrent_pulls_fill_once(server, client, cache):
    data = os.urandom(4 * MiB)
    digest = push_blob(client, "repo", data)
    os.unlink(cache.path(None, digest))

    def pull(_: int) -> bytes:
        with httpx.Client(base_url=server.url, headers=server.basic_auth, timeout=30) as c:
            return c.get(f"/v2/repo/blobs/{digest}").content

    with ThreadPoolExecutor(8) as pool:
        assert all(body == data for body in pool.map(pull, range(8)))
    assert _read(cache.path(None, digest)) == data
    assert [name for name in os.listdir(cache.root) if name not in (".lock", ".alive", "aes256")] == []


@sqlite_only
def test_a_tiny_budget_evicts_the_least_recently_used(server, client, cache):
    cache.budget = 3 * MiB
    blobs = {}
    for _ in range(4):
        data = os.urandom(MiB)
        blobs[push_blob(client, "repo", data)] = data
        client.get(f"/v2/repo/blobs/{next(iter(blobs))}")  # the first stays the most recently used
        os.utime(cache.path(None, next(iter(blobs))))
    held = [d for d in blobs if os.path.exists(cache.path(None, d))]
    assert sum(os.path.getsize(cache.path(None, d)) for d in held) <= cache.budget
    assert next(iter(blobs)) in held and len(held) == 3
    for digest, data in blobs.items():  # evicted or not, every pull is right
        assert client.get(f"/v2/repo/blobs/{digest}").content == data
    big = os.urandom(4 * MiB)  # larger than the budget: never cached, still served
    digest = push_blob(client, "repo", big)
    assert client.get(f"/v2/repo/blobs/{digest}").content == big
    assert not os.path.exists(cache.path(None, digest))


@sqlite_only
def test_a_deleted_blob_is_not_served_from_memory_and_leaves_it_with_gc(server, client, cache):
    data = os.urandom(MiB)
    digest = push_blob(client, "repo", data)
    assert os.path.exists(cache.path(None, digest))
    assert client.delete(f"/v2/repo/blobs/{digest}").status_code == 202
    assert_oci_error(client.get(f"/v2/repo/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    server.registry.gc.run(grace_period=0)  # the collector deletes it: its plaintext on this node goes too
    assert not os.path.exists(cache.path(None, digest))


@sqlite_only
def test_kms_content_is_cached_only_when_allowed_and_dropped_with_its_key(server, client, cache, aws):
    kms, ecr = aws("kms"), aws("ecr")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    ecr.create_repository(repositoryName="keyed", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key})
    data = os.urandom(MiB)
    digest = push_blob(client, "keyed", data)
    assert not os.path.exists(cache.path(f"kms/{key}", digest))  # default: the service key's content only
    server.registry.settings.plaintext_cache_kms = True
    try:
        assert client.get(f"/v2/keyed/blobs/{digest}").content == data
        assert _read(cache.path(f"kms/{key}", digest)) == data
        assert client.get(f"/v2/keyed/blobs/{digest}").content == data  # (the key is checked before serving)
        kms.disable_key(KeyId=key)
        assert not os.path.exists(cache.path(f"kms/{key}", digest))
        assert_oci_error(client.get(f"/v2/keyed/blobs/{digest}"), 403, "DENIED")
        kms.enable_key(KeyId=key)
        assert client.get(f"/v2/keyed/blobs/{digest}").content == data
    finally:
        server.registry.settings.plaintext_cache_kms = False


@sqlite_only
def test_only_memory_holds_plaintext(tmp_path, settings, registry):
    with pytest.raises(CacheRefused, match="not tmpfs"):
        PlainCache.open(str(tmp_path / "on-disk"), MiB)
    assert open_for("", 0, False, b"k") is None  # 0: off
    allowed = PlainCache.open(str(tmp_path / "on-disk"), MiB, allow_disk=True)  # the operator said so
    allowed.close()
    assert not os.path.exists(tmp_path / "on-disk")  # the last process to stop empties it
    settings.plaintext_cache_dir = str(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="plaintext_cache_dir"), serve(settings, registry):
        pass


def _held(cache: PlainCache) -> int:
    """Bytes the cache's directory holds (entries, and uploads and fills under way)."""
    return sum(
        os.lstat(os.path.join(top, name)).st_size
        for top, _, names in os.walk(cache.root)
        for name in names
        if name not in (".lock", ".alive")
    )


@sqlite_only
def test_pushes_never_take_the_cache_past_its_budget(server, client, cache):
    cache.budget = 3 * MiB
    data = os.urandom(5 * MiB)
    # Chunks of one upload (the second continues the copy the first began), then a chunked body (no Content-Length,
    # as docker sends a layer): the copy of the push is held between its requests, in memory, within the budget.
    location = start_upload(client, "repo")
    r = client.patch(location, content=data[: 2 * MiB], headers={"Content-Range": f"0-{2 * MiB - 1}"})
    assert r.status_code == 202
    r = client.patch(r.headers["Location"], content=data[2 * MiB : 4 * MiB])
    assert r.status_code == 202
    assert _held(cache) <= cache.budget

    def body():
        for at in range(4 * MiB, 5 * MiB, MiB // 4):
            yield data[at : at + MiB // 4]

    r = client.patch(r.headers["Location"], content=body())
    assert r.status_code == 202
    assert _held(cache) <= cache.budget
    r = client.put(r.headers["Location"], params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha256(data)}").content == data
    # Another upload from its first byte, chunked: no reservation made up front, still within the budget.
    other = os.urandom(4 * MiB)

    def stream():
        for at in range(0, len(other), MiB):
            yield other[at : at + MiB]

    r = client.patch(start_upload(client, "repo"), content=stream())
    assert r.status_code == 202
    assert _held(cache) <= cache.budget
    assert client.put(r.headers["Location"], params={"digest": sha256(other)}).status_code == 201
    assert _held(cache) <= cache.budget


@sqlite_only
def test_concurrent_fills_share_the_budget(database_url):
    root = f"/dev/shm/soko-test-{os.getpid()}-{os.urandom(4).hex()}"
    first, second = PlainCache(root, 3 * MiB), PlainCache(root, 3 * MiB)  # two workers of a node
    try:
        one = first.fill(None, "sha256:" + "1" * 64, 2 * MiB)
        assert one is not None
        # The first fill has not written a byte yet, but its room is taken: the second does not fit beside it.
        assert second.fill(None, "sha256:" + "2" * 64, 2 * MiB) is None
        one.abort()
        two = second.fill(None, "sha256:" + "2" * 64, 2 * MiB)
        assert two is not None
        two.abort()
    finally:
        second.close()
        first.close()
    assert not os.path.exists(root)


@sqlite_only
def test_a_fill_that_cannot_be_installed_never_cuts_the_pull(server, client, cache):
    data = os.urandom(48 * MiB)
    digest = push_blob(client, "repo", data)
    os.unlink(cache.path(None, digest))
    temp = os.path.join(cache.root, f".fill-aes256-{digest.replace(':', '-')}")
    with client.stream("GET", f"/v2/repo/blobs/{digest}") as r:
        pieces = r.iter_bytes()
        first = next(pieces)
        assert os.path.exists(temp)
        os.unlink(temp)  # (what another filler's end did by name: the fill can no longer be installed)
        body = first + b"".join(pieces)
    assert body == data
    assert client.get(f"/v2/repo/blobs/{digest}").content == data


@sqlite_only
def test_a_cache_directory_gone_leaves_pushes_and_pulls_working(server, client, cache, aws):
    # (The last worker of a node to stop removes the directory: one starting at that moment may find it gone.)
    shutil.rmtree(cache.root)
    data = os.urandom(MiB)
    digest = push_blob(client, "repo", data)
    assert client.get(f"/v2/repo/blobs/{digest}").content == data
    kms = aws("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)


def test_abandoned_deployments_leave_memory_at_the_next_start(tmp_path):
    """A server killed with SIGKILL cannot empty its directory: the next start on the node removes it, never the
    directory of a server still running (its .alive lock is held) nor of one starting now."""
    killed = PlainCache(str(tmp_path / "killed"), MiB)
    running = PlainCache(str(tmp_path / "running"), MiB)
    starting = tmp_path / "starting"
    starting.mkdir()
    (starting / ".alive").touch()
    os.close(killed._alive)  # (as its process's death would: the lock goes, the files stay)
    for name in ("killed", "running"):
        os.utime(tmp_path / name / ".alive", (0, 0))
    sweep_abandoned(str(tmp_path), keep="mine")
    assert sorted(os.listdir(tmp_path)) == ["running", "starting"]
    running.close()


def test_a_directory_others_can_change_is_refused(tmp_path, database_url):
    shared = tmp_path / "shared"  # writable by everyone, without /dev/shm's sticky bit: they could swap ours
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(CacheRefused, match="other users"):
        PlainCache.open(str(shared / "soko" / "deployment"), MiB, allow_disk=True)
    linked = tmp_path / "linked"  # a link (ours) to a directory others may write: the same
    linked.symlink_to(shared)
    with pytest.raises(CacheRefused, match="other users"):
        PlainCache.open(str(linked / "deployment"), MiB, allow_disk=True)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make another user's files")
def test_another_users_directory_in_dev_shm_is_refused(tmp_path, database_url):
    # What another local user can do in /dev/shm (sticky, writable by all): make soko-<uid> first (theirs, open to
    # all), or a link by that name to a directory of theirs. Entries made there could be replaced by theirs, and
    # served as the blob: refused.
    shm = tmp_path / "shm"
    shm.mkdir()
    os.chmod(shm, 0o1777)
    theirs = shm / "soko-0"
    theirs.mkdir()
    os.chmod(theirs, 0o777)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(CacheRefused, match="other users"):
        PlainCache.open(str(theirs / "deployment"), MiB, allow_disk=True)
    link = shm / "soko-1"
    link.symlink_to(theirs)
    os.lchown(link, 65534, 65534)
    with pytest.raises(CacheRefused, match="other users"):
        PlainCache.open(str(link / "deployment"), MiB, allow_disk=True)



def test_uploads_left_open_hold_few_descriptors_and_a_cancel_lets_go(server, client, cache):
    # Each upload's copy held between its chunks is an open file: a pusher leaving uploads open by the thousand
    # (max_open_uploads per repository) must not run the process out of descriptors, nor hold memory.
    locations = []
    for _ in range(MAX_HELD_UPLOADS + 8):
        r = client.patch(start_upload(client, "repo"), content=b"x" * 100, headers={"Content-Range": "0-99"})
        assert r.status_code == 202
        locations.append(r.headers["Location"])
    held = [name for name in os.listdir(cache.root) if name.startswith(".up-")]
    assert 0 < len(held) <= MAX_HELD_UPLOADS
    upload_id = locations[-1].split("?")[0].rsplit("/", 1)[1]
    assert f".up-{upload_id}" in held
    assert client.delete(locations[-1]).status_code == 204
    assert not os.path.exists(os.path.join(cache.root, f".up-{upload_id}"))


@pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs")
def test_a_full_tmpfs_degrades_to_the_stream(tmp_path, settings, registry):
    """The budget is larger than the memory the tmpfs may take (or other programs filled it): every write that
    finds it full gives the copy up; pushes and pulls go on, whole and exact."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        settings.plaintext_cache_dir = str(small / "cache")
        settings.plaintext_cache_bytes = 64 * MiB
        with serve(settings, registry) as running:
            with httpx.Client(base_url=running.url, headers=running.basic_auth, timeout=30) as client:
                data = os.urandom(3 * MiB + 5)
                digest = push_blob(client, "repo", data)
                location = start_upload(client, "repo")
                other = os.urandom(2 * MiB)
                r = client.patch(location, content=iter([other[:MiB], other[MiB:]]))
                assert r.status_code == 202
                assert client.put(r.headers["Location"], params={"digest": sha256(other)}).status_code == 201
                for _ in range(2):
                    assert client.get(f"/v2/repo/blobs/{digest}").content == data
                    assert client.get(f"/v2/repo/blobs/{sha256(other)}").content == other
                r = client.get(f"/v2/repo/blobs/{digest}", headers={"Range": "bytes=10-19"})
                assert r.status_code == 206 and r.content == data[10:20]
            cache = running.registry.ctx.plain_cache
            assert cache is not None and not os.path.exists(cache.path(None, digest))
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_copy_held_by_another_worker_leaves_memory_when_the_upload_completes(server, client, cache):
    # Worker A holds the copy of an upload it streamed (a PATCH landed there); the PUT lands here, worker B, which
    # completes from its own read. A's copy is useless now: its memory goes at once (it counted in no budget once
    # unlinked, and A only lets go of it minutes later), and A can never install what is left of it.
    data = os.urandom(MiB)
    location = start_upload(client, "repo")
    upload_id = location.split("?")[0].rsplit("/", 1)[1]
    worker_a = PlainCache(cache.root, cache.budget)
    try:
        held = worker_a.upload(upload_id, 0, None)  # (a chunked body: room taken as the bytes come)
        assert held is not None and held.write((data,))
        worker_a.keep_upload(upload_id, held)
        r = client.patch(location, content=data, headers={"Content-Range": f"0-{MiB - 1}"})
        assert r.status_code == 202
        assert client.put(r.headers["Location"], params={"digest": sha256(data)}).status_code == 201
        assert os.fstat(held.fd).st_blocks == 0  # its memory given back
        taken = worker_a.take_upload(upload_id)
        assert taken is held and not taken.commit(None, sha256(data), MiB, verified=True)
        assert not os.path.exists(cache.path(None, sha256(data)))
        assert client.get(f"/v2/repo/blobs/{sha256(data)}").content == data
    finally:
        worker_a.close()


def test_an_unsafe_default_directory_turns_the_cache_off_instead_of_stopping_soko(caplog):
    # The default directory is shared ground (/dev/shm): another local user making soko-<uid> unsafe first must cost
    # this node its cache (said in the log), not its start. An explicit plaintext_cache_dir is still refused.
    shm = tempfile.mkdtemp(dir="/dev/shm", prefix="soko-test-shm-")
    try:
        elsewhere = os.path.join(shm, "elsewhere")
        os.mkdir(elsewhere)
        os.chmod(elsewhere, 0o777)  # writable by everyone, not sticky: entries there could be swapped
        os.symlink(elsewhere, os.path.join(shm, f"soko-{os.getuid()}"))  # what another user could make first
        with caplog.at_level("WARNING", logger="soko.plain_cache"):
            assert open_for("", MiB, False, b"k", shm=shm) is None
        assert "plaintext cache off" in caplog.text and "not a directory owned by this user" in caplog.text
        with pytest.raises(CacheRefused, match="other users"):
            open_for(os.path.join(elsewhere, "mine"), MiB, False, b"k", shm=shm)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
