"""Large streamed response bodies (decrypted blobs not sent from the plaintext cache) go at the client's pace, in
bounded memory: granian's stream transport would queue them whole (soko.http.piped). Real server, raw sockets."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time

import httpx
import pytest

from soko.http import piped
from soko.storage.paths import blob_path
from tests.conftest import serve
from tests.oci.helpers import start_upload
from tests.rawhttp import wait_until
from tests.registry.test_descriptors import open_descriptors, postgres_sockets

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # nothing here depends on the engine

MiB = 1 << 20
BLOCK = os.urandom(MiB)
COPY_THREADS = piped.WRITERS  # (before a test sets it to 0)


def _content(mib: int):
    """``mib`` MiB that differ per MiB (nothing held whole in this process: its RSS is the server's)."""
    for i in range(mib):
        yield i.to_bytes(8, "big") + BLOCK[8:]


def _push(client: httpx.Client, mib: int) -> str:
    digest = hashlib.sha256()
    for piece in _content(mib):
        digest.update(piece)
    location = start_upload(client, "repo")
    r = client.patch(location, content=_content(mib))
    assert r.status_code == 202, r.text
    r = client.put(r.headers["Location"], params={"digest": f"sha256:{digest.hexdigest()}"})
    assert r.status_code == 201, r.text
    return f"sha256:{digest.hexdigest()}"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _get(server, digest: str, extra: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.host.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    auth = "".join(f"{k}: {v}\r\n" for k, v in server.basic_auth.items())
    sock.sendall(f"GET /v2/repo/blobs/{digest} HTTP/1.1\r\nHost: {server.host}\r\n{auth}{extra}\r\n".encode())
    return sock


def _head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _open_fds() -> int:
    """This process's descriptors but the database's: SQLite files, PostgreSQL sockets. A connection pool may grow
    while a test runs (a background job borrows a connection as a request does), which is no leak."""
    database = postgres_sockets()
    return sum(
        target not in database and not os.path.basename(target).startswith("metadata.db")
        for target in open_descriptors()
    )


def _other_threads() -> int:
    """Threads but the copy pool's (which keeps up to piped.WRITERS idle threads)."""
    return sum(not t.name.startswith("soko-pipe") for t in threading.enumerate())


@pytest.fixture(params=["copy-threads", "event-loop"])
def uncached(request, settings, registry, monkeypatch):
    """The real server with the plaintext cache off: every pull of an (encrypted) blob decrypts as it streams; into
    the pipe by a copy thread, or (all taken: none here) from the event loop."""
    if request.param == "event-loop":
        monkeypatch.setattr(piped, "WRITERS", 0)
    settings.plaintext_cache_bytes = 0
    with (
        serve(settings, registry) as running,
        httpx.Client(base_url=running.url, headers=running.basic_auth, timeout=60) as client,
    ):
        yield running, client


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
def test_a_slow_client_holds_no_more_than_a_pipe(uncached):
    """A client reading a 256 MiB Range far slower than the server decrypts it: the server's memory stays about
    where it was (granian's queue would have taken most of the body), and the bytes are the blob's."""
    server, client = uncached
    mib = 256
    digest = _push(client, mib)
    start = 4096
    expected = hashlib.sha256()
    for i, piece in enumerate(_content(mib)):
        expected.update(piece[start:] if i == 0 else piece)
    sock = _get(server, digest, f"Range: bytes={start}-\r\n")
    with sock:
        head, rest = _head(sock)
        assert head.startswith(b"HTTP/1.1 206"), head
        got, received = hashlib.sha256(rest), len(rest)
        baseline = peak = _rss()
        buffer = memoryview(bytearray(64 * 1024))
        while received < mib * MiB - start:
            n = sock.recv_into(buffer)
            assert n, received
            got.update(buffer[:n])
            received += n
            peak = max(peak, _rss())
            time.sleep(0.0005)  # a slow link: the server produces far faster than this reads
    assert got.hexdigest() == expected.hexdigest()
    assert peak - baseline < 64 * MiB, f"server memory grew by {(peak - baseline) / MiB:.0f} MiB"


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
def test_a_client_gone_mid_body_leaves_no_pipe_thread_or_descriptor(uncached):
    server, client = uncached
    digest = _push(client, 32)
    # (also: a normal pull, whole and exact)
    argv = ["curl", "-sS", "-f", "-o", "-", f"{server.url}/v2/repo/blobs/{digest}"]
    for key, value in server.basic_auth.items():
        argv += ["-H", f"{key}: {value}"]
    assert subprocess.run(argv, capture_output=True, check=True).stdout == b"".join(_content(32))
    directory = piped._fifo_directory()
    assert directory is not None and oct(os.stat(directory).st_mode & 0o777) == "0o700"
    fds, threads = _open_fds(), _other_threads()
    for cut in (0, 2 * MiB, 12 * MiB):  # before any body byte, and mid-body
        sock = _get(server, digest)
        with sock:
            head, rest = _head(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
            received = len(rest)
            while received < cut:
                received += len(sock.recv(65536))
        deadline = time.monotonic() + 30
        while (_open_fds() > fds or os.listdir(directory) or piped._busy) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(directory) == []
        assert piped._busy == 0
        assert _open_fds() <= fds, (os.listdir("/proc/self/fd"), fds)
        assert _other_threads() <= threads, [t.name for t in threading.enumerate()]
        assert sum(t.name.startswith("soko-pipe") for t in threading.enumerate()) <= COPY_THREADS
    r = client.get(f"/v2/repo/blobs/{digest}", headers={"Range": f"bytes={5 * MiB}-"})
    assert r.status_code == 206 and r.content == b"".join(_content(32))[5 * MiB :]


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
def test_an_error_mid_body_cuts_it_off(uncached, settings):
    """Content damaged past the first pieces: the 200 went out, the body is cut off short of its Content-Length,
    never completed with wrong bytes."""
    server, client = uncached
    digest = _push(client, 16)
    storage = server.registry.ctx.storage
    path = os.path.join(storage.inner.root, storage.sealed(blob_path(digest)))
    with open(path, "r+b") as f:
        f.seek(10 * MiB)
        f.write(b"\0" * 4096)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"/v2/repo/blobs/{digest}")
    r = client.get(f"/v2/repo/blobs/{digest}", headers={"Range": "bytes=0-1048575"})  # (a small body: still served)
    assert r.status_code == 206 and r.content == b"".join(_content(1))


@pytest.fixture(params=["copy-threads", "event-loop"])
def filling(request, settings, registry, monkeypatch):
    """The real server with the plaintext cache on, not filled by pushes: a whole pull decrypts and fills it."""
    if request.param == "event-loop":
        monkeypatch.setattr(piped, "WRITERS", 0)
    settings.plaintext_cache_on_push = False
    with (
        serve(settings, registry) as running,
        httpx.Client(base_url=running.url, headers=running.basic_auth, timeout=60) as client,
    ):
        yield running, client


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
def test_a_large_pull_through_the_pipe_fills_the_plaintext_cache(filling):
    server, client = filling
    cache = server.registry.ctx.plain_cache
    assert cache is not None
    digest = _push(client, 12)
    data = b"".join(_content(12))
    entry = cache.path(None, digest)
    assert not os.path.exists(entry)
    assert client.get(f"/v2/repo/blobs/{digest}").content == data
    with open(entry, "rb") as f:
        assert f.read() == data  # decrypted once, verified, installed
    assert client.get(f"/v2/repo/blobs/{digest}").content == data


@pytest.mark.skipif(not piped.available(), reason="no FIFOs here")
def test_stalled_clients_give_their_copy_threads_back(settings, registry, monkeypatch):
    """Clients that stop reading do not keep the copy threads: once one took nothing for ``piped.STALL`` seconds,
    the rest of its body is written from the event loop and its thread is free for the next pulls (before, WRITERS
    stalled clients held every thread for as long as they kept their connections); when it reads again it gets
    every byte, exact."""
    monkeypatch.setattr(piped, "WRITERS", 2)
    monkeypatch.setattr(piped, "STALL", 0.2)
    settings.plaintext_cache_bytes = 0
    with (
        serve(settings, registry) as server,
        httpx.Client(base_url=server.url, headers=server.basic_auth, timeout=60) as client,
    ):
        digest = _push(client, 24)
        data = b"".join(_content(24))
        stalled = [_get(server, digest) for _ in range(piped.WRITERS)]
        try:
            received = [_head(sock)[1] for sock in stalled]
            wait_until(lambda: piped._busy == 0, "stalled clients kept the copy threads")
            assert client.get(f"/v2/repo/blobs/{digest}").content == data  # (meanwhile: a pull of its own)
            for i, sock in enumerate(stalled):
                pieces = [received[i]]
                got = len(received[i])
                while got < len(data):
                    piece = sock.recv(1 << 20)
                    assert piece, got
                    pieces.append(piece)
                    got += len(piece)
                assert b"".join(pieces) == data
        finally:
            for sock in stalled:
                sock.close()
