"""A server runs for months: what serving pushes and pulls, and stopping, take in descriptors they give back.
Each test repeats the work and compares this process's open descriptors (``/proc/self/fd``) once it has settled."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import socket
import time

import httpx
import pytest

from soko.http import piped
from soko.storage import filesystem
from soko.storage.page_cache import RecentWrites
from soko.storage.paths import blob_path
from tests.conftest import aws_client, listening_socket, serve
from tests.oci.helpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, push_blob, put_manifest, sha256
from tests.rawhttp import wait_until
from tests.registry.test_descriptors import open_descriptors

MiB = 1 << 20
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


@pytest.fixture(autouse=True)
def recent_writes(monkeypatch):
    """The filesystem writers keep a duplicate descriptor per recent write (bounded: storage/page_cache.py); one
    at most here, so that what grows is what nothing bounds."""
    monkeypatch.setattr(filesystem, "RECENT", RecentWrites(max_ranges=1))


def _open(registry) -> list[str]:
    """``open_descriptors`` by kind (a socket is a socket: a client's pool may reconnect), less the database pool's
    (as many connections as the busiest moment needed, up to the pool's size: dropped first); the one stored file
    the writers keep (another with every push) is a "stored file"."""
    registry.ctx.db.dispose()
    gc.collect()  # (a connection returned to a pool dropped before: that pool is a cycle, closed with it)
    own = os.path.abspath(registry.settings.data_dir)
    storage = os.path.join(own, "storage") + os.sep
    others = os.path.dirname(os.path.dirname(own)) + os.sep  # other tests' directories (this worker's base temp)
    return sorted(
        "<stored file>" if path.startswith(storage) else re.sub(r":\[\d+\]$", "", path)
        for path in open_descriptors()
        if path.startswith(own) or not path.startswith(others)  # (what earlier tests left closes at any moment)
    )


def _settled(registry, before: list[str] | None = None, timeout: float = 30.0) -> list[str]:
    """``_open`` once it is back to ``before`` (or ``timeout`` passed; no ``before``: once it holds still): a pipe
    given up by a client that went away is let go a few seconds later (piped.LATE_OPEN_GRACE)."""
    deadline = time.monotonic() + timeout
    now = _open(registry)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        previous, now = now, _open(registry)
        if now == (previous if before is None else before):
            break
    return now


def _work(server, client: httpx.Client, ecr, round_: int) -> None:
    """One round of what a registry does all day: pushes (monolithic and chunked), pulls (whole, a range, one the
    client gives up mid-body), a manifest, the catalog, metrics and a few ECR calls."""
    name = f"soak/r{round_ % 3}"
    layer = os.urandom(6 * MiB if round_ % 2 else 4096 + round_)  # (6 MiB: streamed through a pipe)
    digest = push_blob(client, name, layer)
    location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
    part = os.urandom(100_000)
    location = client.patch(location, content=part).headers["Location"]
    assert client.put(location, params={"digest": sha256(part)}).status_code == 201
    config = json.dumps({"round": round_}).encode()
    push_blob(client, name, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config, OCI_CONFIG),
        "layers": [descriptor(layer, OCI_LAYER), descriptor(part, OCI_LAYER)],
    }
    assert put_manifest(client, name, f"t{round_}", manifest).status_code == 201
    got = client.get(f"/v2/{name}/blobs/{digest}")
    assert got.status_code == 200 and got.content == layer
    assert client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=10-2000"}).status_code == 206
    with client.stream("GET", f"/v2/{name}/blobs/{digest}") as gone:  # the client goes away mid-body
        next(gone.iter_bytes(1024))
    assert client.get(f"/v2/{name}/manifests/t{round_}", headers={"Accept": OCI_MANIFEST}).status_code == 200
    assert client.get("/v2/_catalog").status_code == 200
    assert client.get("/metrics").status_code == 200
    ecr.describe_images(repositoryName=name)
    ecr.get_download_url_for_layer(repositoryName=name, layerDigest=digest)


def _data_socket(settings, on: bool):
    """With the data listener, large cached blobs go out by sendfile; without, through a pipe (soko.http.piped)."""
    if not on:
        settings.data_listen = ""
        return None
    data = listening_socket()
    settings.data_listen = f"127.0.0.1:{data.getsockname()[1]}"
    return data


def _client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=server.basic_auth, timeout=60, follow_redirects=True)


@pytest.mark.parametrize("data_listener", [True, False], ids=["data-listener", "piped"])
def test_a_running_server_keeps_as_many_descriptors_however_much_it_serves(settings, registry, data_listener) -> None:
    data = _data_socket(settings, data_listener)
    settings.access_log = os.path.join(settings.data_dir, "access.log")
    with serve(settings, registry, data_socket=data) as server:
        ecr = aws_client(server.url)
        for round_ in range(3):  # warm: pools, threads, the plaintext cache's files
            with _client(server) as client:
                _work(server, client, ecr, round_)
        before = _settled(registry, timeout=10.0)
        for round_ in range(3, 13):
            with _client(server) as client:
                _work(server, client, ecr, round_)
        now = _settled(registry, before)
        ecr.close()
        assert now == before


def test_a_stopped_server_keeps_no_descriptor(settings, registry) -> None:
    """Starting and stopping a server (its SokoApp's upkeep, the PostgreSQL change listener, the engine, the data
    listener, the access log) on one registry, as the test suite does thousands of times."""
    settings.access_log = os.path.join(settings.data_dir, "access.log")
    before: list[str] | None = None
    for round_ in range(4):
        with (
            serve(settings, registry, data_socket=_data_socket(settings, round_ % 2 == 0)) as server,
            _client(server) as client,
        ):
            ecr = aws_client(server.url)
            _work(server, client, ecr, round_)
            ecr.close()
        if before is None:
            before = _settled(registry, timeout=10.0)
        else:
            assert _open(registry) == before


def _pipe_ends() -> list[str]:
    """This process's descriptors on a response body's FIFO (soko.http.piped): its write end, granian's read end."""
    directory = piped._fifo_directory()
    assert directory is not None
    return [target for target in open_descriptors() if target.startswith(directory + os.sep)]


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stopped_server_keeps_no_pipe_of_a_body_that_ended_early(settings, registry) -> None:
    """A pull whose content fails at its first piece: the body ends before granian is known to have the pipe, so its
    write end stays open ``LATE_OPEN_GRACE`` seconds, on a timer of the worker's loop. The server stops within those
    seconds: the stop lets go of it (before, the timer never ran and the descriptor stayed until the process
    ended)."""
    settings.plaintext_cache_bytes = 0  # (the pull decrypts as it streams, through a pipe)
    with serve(settings, registry) as server:
        with _client(server) as client:
            digest = push_blob(client, "repo", os.urandom(6 * MiB))
        storage = registry.ctx.storage
        with open(os.path.join(storage.inner.root, storage.sealed(blob_path(digest))), "r+b") as f:
            f.seek(64 * 1024)  # (inside the first segment: nothing is written into the pipe)
            f.write(b"\0" * 4096)
        auth = "".join(f"{k}: {v}\r\n" for k, v in server.basic_auth.items())
        pull = socket.create_connection(("127.0.0.1", int(server.host.rsplit(":", 1)[1])))
        pull.sendall(f"GET /v2/repo/blobs/{digest} HTTP/1.1\r\nHost: {server.host}\r\n{auth}\r\n".encode())
        assert pull.recv(12) == b"HTTP/1.1 200"
        wait_until(lambda: bool(piped._late), "the body's write end was not kept for a late open")
        assert _pipe_ends()
    pull.close()  # (granian lets go of its read end with the connection)
    wait_until(lambda: not _pipe_ends(), f"a stopped server kept {_pipe_ends()}", timeout=10)
    assert not piped._late


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
def test_a_stopping_worker_waits_out_the_grace_of_a_pipe_nobody_opened(monkeypatch) -> None:
    """A body that ended before granian opened its pipe: an open that found the path may still come, so its write end
    is let go only once its grace has passed, also when the worker stops (``close_late``)."""
    monkeypatch.setattr(piped, "LATE_OPEN_GRACE", 0.3)
    before = _pipe_ends()

    async def worker() -> None:
        pipe = piped.Pipe()
        pipe.close()
        assert len(_pipe_ends()) == len(before) + 1  # the write end, kept for a late open
        await piped.close_late()

    asyncio.run(worker())
    assert _pipe_ends() == before and not piped._late


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
def test_a_stopping_worker_closes_at_once_a_pipe_granian_has_open(monkeypatch) -> None:
    """granian has the pipe open (a read end elsewhere in the process): no open is to come, the write end goes when
    the worker stops, and the reader sees the body end."""
    monkeypatch.setattr(piped, "LATE_OPEN_GRACE", 3600.0)
    before = _pipe_ends()

    async def worker() -> int:
        pipe = piped.Pipe()
        reader = os.open(pipe.path, os.O_RDONLY | os.O_NONBLOCK)  # as granian opens it
        pipe.close()
        await asyncio.wait_for(piped.close_late(), 30)  # (never the hour)
        return reader

    reader = asyncio.run(worker())
    try:
        assert os.read(reader, 1) == b""  # the end of the body: no write end left
    finally:
        os.close(reader)
    assert _pipe_ends() == before and not piped._late
