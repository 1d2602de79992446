"""The data listener (soko.http.data_listener): large cached blobs are redirected from /v2/ to presigned layer URLs
sent with sendfile, after the same authorization; the URLs are checked (signature, expiry, the repository still
holding the blob); Range, HEAD and keep-alive work; a blob not cached is still served; hostile and malformed
requests get clear errors and hold nothing; and real clients (skopeo, the AWS CLI's URLs) follow it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from soko.audit import AuditQuery
from soko.config import load_settings
from soko.http.data_listener import DataListener, _Server
from soko.http.messages import FileResponse, Response
from soko.iam.layer_urls import DataUrls, signer_for
from tests.conftest import listening_socket, serve
from tests.oci.helpers import assert_oci_error, image_manifest, push_blob, put_manifest

MiB = 1 << 20
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # nothing here depends on the engine


@pytest.fixture
def data_server(registry, settings):
    """A server with its data listener on a fresh port."""
    data = listening_socket()
    port = data.getsockname()[1]
    settings.data_listen = f"127.0.0.1:{port}"
    settings.keepalive_timeout = 2.0
    with serve(settings, registry, data_socket=data) as running:
        running.data_port = port  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def client(data_server):
    with httpx.Client(base_url=data_server.url, timeout=30, headers=data_server.basic_auth) as c:
        yield c


def _redirected(client: httpx.Client, path: str, **kwargs) -> httpx.Response:
    r = client.get(path, **kwargs)
    assert r.status_code == 307, (r.status_code, r.text)
    assert r.headers["Cache-Control"] == "no-store"
    return r


@sqlite_only
def test_a_large_cached_blob_is_redirected_and_sent_whole_and_by_range(data_server, client):
    data = os.urandom(5 * MiB + 17)
    digest = push_blob(client, "repo", data)
    r = _redirected(client, f"/v2/repo/blobs/{digest}")
    location = urlsplit(r.headers["Location"])
    assert (location.hostname, location.port) == ("127.0.0.1", data_server.data_port)
    assert location.path.startswith("/layers/")
    with httpx.Client(timeout=30) as anonymous:  # the URL is the authorization: no header follows it
        whole = anonymous.get(r.headers["Location"])
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["Docker-Content-Digest"] == digest
        assert whole.headers["Content-Length"] == str(len(data))
        part = anonymous.get(r.headers["Location"], headers={"Range": "bytes=1000-2000999"})
        assert part.status_code == 206 and part.content == data[1000:2001000]
        assert part.headers["Content-Range"] == f"bytes 1000-2000999/{len(data)}"
        tail = anonymous.get(r.headers["Location"], headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        outside = anonymous.get(r.headers["Location"], headers={"Range": f"bytes={len(data)}-"})
        assert outside.status_code == 416 and outside.headers["Content-Range"] == f"bytes */{len(data)}"
        head = anonymous.head(r.headers["Location"])
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data)) and not head.content
    followed = client.get(f"/v2/repo/blobs/{digest}", follow_redirects=True, headers={"Range": "bytes=5-9"})
    assert followed.status_code == 206 and followed.content == data[5:10]  # the Range goes along


@sqlite_only
def test_small_blobs_heads_and_unauthorized_requests_are_answered_in_band(data_server, client):
    small = push_blob(client, "repo", os.urandom(MiB))
    assert client.get(f"/v2/repo/blobs/{small}").status_code == 200
    large = push_blob(client, "repo", os.urandom(5 * MiB))
    head = client.head(f"/v2/repo/blobs/{large}")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(5 * MiB)
    with httpx.Client(base_url=data_server.url, timeout=30) as anonymous:
        assert_oci_error(anonymous.get(f"/v2/repo/blobs/{large}"), 401, "UNAUTHORIZED")  # no URL without a right


@sqlite_only
def test_a_blob_not_in_the_cache_is_streamed_in_band_and_by_the_data_listener(data_server, client):
    cache = data_server.registry.ctx.plain_cache
    data_server.registry.settings.plaintext_cache_on_push = False
    data = os.urandom(6 * MiB + 3)
    digest = push_blob(client, "repo", data)
    first = client.get(f"/v2/repo/blobs/{digest}")
    assert first.status_code == 200 and first.content == data  # not cached yet: sent in-band (and cached)
    url = _redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"]
    os.unlink(cache.path(None, digest))  # evicted between the redirect and the download
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200 and r.content == data


@sqlite_only
def test_a_url_stops_working_when_the_repository_no_longer_holds_the_blob(data_server, client):
    data = os.urandom(5 * MiB)
    digest = push_blob(client, "repo", data)
    url = _redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"]
    assert httpx.get(url, timeout=30).content == data
    assert client.delete(f"/v2/repo/blobs/{digest}").status_code == 202
    assert os.path.exists(data_server.registry.ctx.plain_cache.path(None, digest))  # cached still,
    assert_oci_error(httpx.get(url, timeout=30), 404, "BLOB_UNKNOWN")  # but no longer the repository's


@sqlite_only
def test_tampered_expired_and_foreign_urls_are_refused(data_server, client):
    digest = push_blob(client, "repo", os.urandom(5 * MiB))
    url = _redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"]
    base, token = url.split("/layers/")
    payload, mac = token.split(".")
    assert_oci_error(httpx.get(f"{base}/layers/{payload}.{mac[:-2]}AA"), 403, "DENIED")
    signer = signer_for(data_server.identity)
    old, _ = signer.token("000000000000", "repo", digest, now=time.time() - 3600)
    assert_oci_error(httpx.get(f"{base}/layers/{old}"), 403, "DENIED")
    assert_oci_error(httpx.get(f"{base}/layers/garbage"), 403, "DENIED")
    other, _ = signer.token("000000000000", "other-repo", digest)
    assert_oci_error(httpx.get(f"{base}/layers/{other}"), 404, "BLOB_UNKNOWN")
    # Nothing else is served here: not the registry API, not another method.
    assert_oci_error(httpx.get(f"{base}/v2/", timeout=10), 404)
    assert_oci_error(httpx.post(url, content=b"x", timeout=10), (400, 405))
    assert_oci_error(httpx.delete(url, timeout=10), 405)


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@sqlite_only
def test_malformed_oversized_and_idle_connections_get_clear_answers_and_are_closed(data_server, client):
    port = data_server.data_port
    assert _raw(port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    oversized = b"GET /layers/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert _raw(port, oversized).split(b" ")[1] in (b"431", b"400")
    long_target = b"GET /layers/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert _raw(port, long_target).split(b" ")[1] in (b"414", b"431")
    answer = _raw(port, b"GET /layers/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"connection: close" in answer.lower()
    # Both framings: a front proxy going by Content-Length would see one request, h11 (chunked) two. Refused and
    # closed: the second is never answered (RFC 9112 §6.1).
    smuggled = b"GET /layers/x HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    smuggled += b"GET /layers/hidden HTTP/1.1\r\nHost: a\r\n\r\n"
    answer = _raw(port, smuggled)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1") == 1
    # Expect: 100-continue and no body sent: refused at once, not after the idle timeout
    answer = _raw(port, b"GET /layers/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", 1.0)
    assert answer.startswith(b"HTTP/1.1 400 ")
    # A client that connects and sends nothing is closed after keepalive_timeout (2 s here), holding no slot.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        assert idle.recv(10) == b""  # (a timeout here raises: the listener kept it open)
    # And the listener still serves.
    digest = push_blob(client, "repo", os.urandom(5 * MiB))
    assert httpx.get(_redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"], timeout=30).status_code == 200


@sqlite_only
def test_keep_alive_and_many_concurrent_downloads(data_server, client):
    data = os.urandom(8 * MiB)
    digest = push_blob(client, "repo", data)
    url = _redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"]
    with httpx.Client(timeout=30) as one:  # one connection, several downloads in a row
        for _ in range(3):
            assert hashlib.sha256(one.get(url).content).hexdigest() == digest.split(":")[1]

    def pull(_: int) -> str:
        return hashlib.sha256(httpx.get(url, timeout=60).content).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(pull, range(32))) == {digest.split(":")[1]}


@sqlite_only
def test_get_download_url_for_layer_hands_out_data_listener_urls(data_server, client, aws):
    data = os.urandom(5 * MiB)
    ecr = aws("ecr")
    ecr.create_repository(repositoryName="app")
    push_blob(client, "app", b"{}")
    digest = push_blob(client, "app", data)
    assert put_manifest(client, "app", "v1", image_manifest(b"{}", [data])).status_code == 201
    url = ecr.get_download_url_for_layer(repositoryName="app", layerDigest=digest)["downloadUrl"]
    assert urlsplit(url).port == data_server.data_port
    assert httpx.get(url, timeout=30).content == data


def test_data_urls_only_send_plain_http_clients_to_the_plain_listener(server):
    urls = DataUrls(server.identity, "0.0.0.0:5001")
    assert urls.base("http", "registry.example:5000") == "http://registry.example:5001"
    assert urls.base("http", "[::1]:5000") == "http://[::1]:5001"
    assert urls.base("http", "registry.example") == "http://registry.example:5001"
    assert urls.base("https", "registry.example") is None  # never downgraded to plain text on its own
    pinned = DataUrls(server.identity, "0.0.0.0:5001", "https://data.example/")
    assert pinned.base("https", "registry.example") == "https://data.example"
    plain = DataUrls(server.identity, "0.0.0.0:5001", "http://data.example")
    assert plain.base("http", "registry.example") == "http://data.example"
    assert plain.base("https", "registry.example") is None  # an operator's plain URL is for plain clients only
    assert DataUrls(server.identity, "").base("http", "a:1") is None


@pytest.mark.parametrize(
    "values",
    [
        {"data_listen": "nonsense"},
        {"data_listen": "0.0.0.0:70000"},
        {"data_listen": "127.0.0.1:5000"},  # the main listener's port
        {"data_url": "http://a:1"},  # without data_listen
        {"data_listen": "0.0.0.0:5001", "data_url": "ftp://a"},
        {"data_listen": "0.0.0.0:5001", "data_url": "http://a/path"},
    ],
)
def test_malformed_data_listener_settings_are_refused_at_start(values):
    with pytest.raises(ValueError, match="data_"):
        load_settings(overrides=values, env={})


@sqlite_only
@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_skopeo_follows_the_redirect_and_gets_every_byte(data_server, client, tmp_path, monkeypatch):
    layer = os.urandom(6 * MiB)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    push_blob(client, "app", config.encode())
    digest = push_blob(client, "app", layer)
    assert put_manifest(client, "app", "v1", image_manifest(config.encode(), [layer])).status_code == 201
    served: list[int] = []
    respond = _Server._respond

    async def counting(self, request):
        response = await respond(self, request)
        served.append(response.status)
        return response

    monkeypatch.setattr(_Server, "_respond", counting)
    credentials = base64.b64decode(data_server.token).decode()  # AWS:<password>
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--src-creds", credentials,
         f"docker://{data_server.host}/app:v1", f"dir:{tmp_path / 'out'}"],
        check=True, capture_output=True, timeout=120,
    )
    assert (tmp_path / "out" / digest.split(":")[1]).read_bytes() == layer
    assert served == [200]  # the layer came from the data listener; the small config in-band


@sqlite_only
def test_a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_idle_timeout(data_server):
    # keepalive_timeout is 2 s here: every byte comes well within it, the whole head does not.
    with socket.create_connection(("127.0.0.1", data_server.data_port), timeout=10) as slow:
        try:
            slow.sendall(b"GET /layers/x HTTP/1.1\r\nHost: a\r\nX-Drip: ")
            for _ in range(20):
                time.sleep(0.25)
                slow.sendall(b"a")
            slow.sendall(b"\r\n\r\n")
            answer = slow.recv(65536)
        except OSError:  # reset: closed by the listener
            answer = b""
    assert answer == b""  # no answer: the connection was closed before the head was complete


def _stalled(port: int, path: str, headers: str = "") -> int:
    """GET ``path``, read nothing for three times keepalive_timeout (2 s here), then all that comes: its length."""
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n{headers}\r\n".encode())
        time.sleep(6)
        stalled.settimeout(2)
        received = 0
        try:
            while chunk := stalled.recv(MiB):
                received += len(chunk)
        except OSError:  # reset, or nothing more coming
            pass
        return received


@sqlite_only
def test_a_client_that_stops_reading_a_download_is_cut_off(data_server, client):
    data = os.urandom(32 * MiB)
    digest = push_blob(client, "repo", data)
    path = urlsplit(_redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"]).path
    assert _stalled(data_server.data_port, path) < len(data)  # cut off: its slot and the file are free
    assert httpx.get(f"http://127.0.0.1:{data_server.data_port}{path}", timeout=30).content == data


def test_the_connection_limit_is_shared_by_the_listener_threads():
    async def handle(request):
        return Response(200, {}, b"ok")

    sock = listening_socket()
    listener = DataListener(handle, sock, keepalive_timeout=10, max_connections=3, threads=2)
    try:
        connections, answers = [], []
        for _ in range(4):  # one after another, each kept open
            conn = socket.create_connection(sock.getsockname(), timeout=10)
            connections.append(conn)
            try:
                conn.sendall(b"GET /layers/x HTTP/1.1\r\nHost: a\r\n\r\n")
                answers.append(conn.recv(65536))
            except OSError:
                answers.append(b"")
        # three held (whichever thread accepted each: a share per thread would hold two), the fourth refused
        served = [answer.startswith(b"HTTP/1.1 200 ") for answer in answers]
        assert served == [True, True, True, False]
        for conn in connections:
            conn.close()
    finally:
        listener.close(1)
        sock.close()


def test_close_ends_idle_connections_at_once_and_downloads_past_the_timeout():
    async def handle(request):
        if request.path == "/layers/slow":  # a download still going when the listener stops
            await asyncio.sleep(60)
        return Response(200, {}, b"ok")

    sock = listening_socket()
    listener = DataListener(handle, sock, keepalive_timeout=60, threads=1)
    idle = socket.create_connection(sock.getsockname(), timeout=10)
    busy = socket.create_connection(sock.getsockname(), timeout=10)
    try:
        idle.sendall(b"GET /layers/x HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = b""
        while not answer.endswith(b"ok"):
            answer += idle.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")  # kept alive, waiting for the next request
        busy.sendall(b"GET /layers/slow HTTP/1.1\r\nHost: a\r\n\r\n")
        while not listener.in_flight:
            time.sleep(0.01)
        listener.close(0.5)
        assert idle.recv(65536) == b""  # closed (a timeout here raises: it was left open)
        try:
            assert busy.recv(65536) == b""
        except ConnectionResetError:  # cut off
            pass
        assert listener.connections == 0  # every connection's task ended before the loop closed
    finally:
        idle.close()
        busy.close()
        sock.close()


def test_a_failing_download_logs_no_part_of_its_token(caplog):
    async def handle(request):
        raise RuntimeError("the handler failed")

    sock = listening_socket()
    listener = DataListener(handle, sock, keepalive_timeout=10, threads=1)
    try:
        r = httpx.get(f"http://127.0.0.1:{sock.getsockname()[1]}/layers/eyJhIjoiMSJ9.SECRETMAC", timeout=10)
        assert_oci_error(r, 500, "UNKNOWN")
    finally:
        listener.close(1)
        sock.close()
    assert "the handler failed" in caplog.text and "/layers/…" in caplog.text
    assert "SECRETMAC" not in caplog.text and "eyJhIjoiMSJ9" not in caplog.text  # the token is the credential


def test_a_cached_file_gone_before_it_is_opened_is_asked_for_again(tmp_path):
    # The handler found the layer cached, then it was evicted before the listener opened it: asked again, the
    # handler finds it elsewhere (here: another file; in Soko, storage).
    kept = tmp_path / "kept"
    kept.write_bytes(b"layer bytes")
    paths = [str(tmp_path / "evicted"), str(kept)]
    observed: list[int] = []

    async def handle(request):
        return FileResponse(200, {}, paths.pop(0), 0, 11)

    sock = listening_socket()
    listener = DataListener(handle, sock, lambda request, status, *_: observed.append(status), 10, threads=1)
    try:
        r = httpx.get(f"http://127.0.0.1:{sock.getsockname()[1]}/layers/x", timeout=10)
    finally:
        listener.close(1)
        sock.close()
    assert r.status_code == 200 and r.content == b"layer bytes"
    assert observed == [200]


@pytest.fixture
def behind_a_proxy(settings, tmp_path):
    settings.trusted_proxies = ["127.0.0.1/32"]  # the test client plays the TLS terminator in front of the data port
    settings.access_log = str(tmp_path / "access.log")
    return settings


@sqlite_only
def test_the_data_listener_takes_a_trusted_proxys_word_for_the_client(behind_a_proxy, data_server):
    url = f"http://127.0.0.1:{data_server.data_port}/layers/garbage"
    assert httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10).status_code == 403
    log = Path(behind_a_proxy.access_log)
    deadline = time.monotonic() + 10
    while not (log.exists() and "/layers/" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    (line,) = [json.loads(line) for line in log.read_text().splitlines() if "/layers/" in line]
    assert line["source"] == "203.0.113.9"  # not the proxy's address


@sqlite_only
def test_downloads_on_the_data_listener_count_as_requests_in_flight(data_server, client):
    digest = push_blob(client, "repo", os.urandom(32 * MiB))
    path = urlsplit(_redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"]).path

    def in_flight() -> float:
        match = re.search(r"^soko_http_requests_in_flight (\S+)$", client.get("/metrics").text, re.M)
        assert match is not None
        return float(match.group(1))

    with socket.socket() as stalled:  # a download that stays in flight (until cut off after keepalive_timeout)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", data_server.data_port))
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        counted = in_flight()
        while counted < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            counted = in_flight()
    assert counted == 2  # the scrape and the download


@sqlite_only
def test_a_stalled_client_of_a_streamed_download_is_cut_off_without_an_error_logged(data_server, client, caplog):
    data_server.registry.settings.plaintext_cache_on_push = False  # not cached: the listener streams it
    digest = push_blob(client, "repo", os.urandom(32 * MiB))
    signer = signer_for(data_server.identity)
    token, _ = signer.token("000000000000", "repo", digest)
    # (a range: read from storage piece by piece, no cache fill)
    assert _stalled(data_server.data_port, f"/layers/{token}", "Range: bytes=0-\r\n") < 32 * MiB  # cut off,
    assert "could not produce" not in caplog.text  # and a client cut off is no server error


def test_a_data_listener_that_cannot_start_says_so(monkeypatch):
    """A listener thread that fails to start fails the worker's start instead of leaving a port nobody answers."""
    from soko.http.data_listener import DataListener

    async def refuse(*args, **kwargs):
        raise OSError("no")

    monkeypatch.setattr("asyncio.start_server", refuse)
    sock = listening_socket()
    with sock, pytest.raises(RuntimeError, match="did not start"):
        DataListener(lambda request: None, sock)  # type: ignore[arg-type,return-value]


@sqlite_only
def test_request_heads_whose_lines_do_not_end_in_crlf_are_refused_and_closed(data_server, client):
    """h11 alone ends a line at a bare LF; a front proxy that does not would see another request (smuggling)."""
    port = data_server.data_port
    digest = push_blob(client, "repo", b"layer bytes")
    token, _ = signer_for(data_server.identity).token("000000000000", "repo", digest)
    get = f"GET /layers/{token} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    hostile = [
        get.replace(b"\r\n", b"\n"),  # bare LF throughout
        get.replace(b"Host: a\r\n", b"Host: a\n"),  # one bare LF
        get.replace(b"\r\n\r\n", b"\r\n\n"),  # the blank line's
        get.replace(b"Host: a\r\n", b"Host: a\nX-Hidden: 1\r\n"),  # a header only h11 would see
        get.replace(b"Host: a\r\n", b"Host: a\rX-Hidden: 1\r\n"),  # bare CR
        get.replace(b"\r\n\r\n", b"\r\n\r\r\n"),  # CR CR LF
        b"\n" + get,  # a bare LF before the request line (h11 skips empty lines)
    ]
    for head in hostile:
        answer = _raw(port, head)
        assert answer.startswith(b"HTTP/1.1 400 "), (head, answer[:200])
        assert b"connection: close" in answer.lower() and b"CRLF" in answer
        assert answer.count(b"HTTP/1.1 ") == 1 and b"layer bytes" not in answer
    # A CR at the end of one read whose LF does not begin the next; and a later request of a keep-alive connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(get[: get.index(b"\r\n") + 1])
        time.sleep(0.2)
        sock.sendall(b"Host: a\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(get)
        first = _read_response(sock)
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"layer bytes")
        sock.sendall(get.replace(b"\r\n", b"\n"))
        second = _read_all(sock)
        assert second.startswith(b"HTTP/1.1 400 ") and b"connection: close" in second.lower()
    # Valid heads are served: one split between its CR and LF, and three pipelined in one write on one connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cut = get.index(b"\r\n") + 1
        sock.sendall(get[:cut])
        time.sleep(0.2)
        sock.sendall(get[cut:])
        assert _read_response(sock).endswith(b"\r\n\r\nlayer bytes")
    head = get.replace(b"GET ", b"HEAD ")
    last = get.replace(b"Host: a\r\n", b"Host: a\r\nConnection: close\r\n")
    answers = _raw(port, get + head + last)
    assert answers.count(b"HTTP/1.1 200 ") == 3 and answers.count(b"layer bytes") == 2, answers


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, read off a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@sqlite_only
def test_a_redirected_pull_of_a_kms_blob_asks_kms_once_per_download(data_server, client, server, aws):
    """With plaintext_cache_kms, the key is checked (KMS Decrypt, audited) where the bytes go out: the 307 asks
    nothing, each download asks once; a key disabled after the 307 still stops the download."""
    kms, ecr = aws("kms"), aws("ecr")
    key = kms.create_key()["KeyMetadata"]
    ecr.create_repository(
        repositoryName="keyed", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key["KeyId"]}
    )
    data_server.registry.settings.plaintext_cache_kms = True
    audit = data_server.identity.audit

    def decrypts() -> int:
        audit.flush()
        for running in (server, data_server):  # (one database: the aws fixture's server shares the registry)
            running.identity.audit.flush()
        return sum(r["count"] for r in audit.query(AuditQuery(action="kms:Decrypt", resource=key["Arn"])))

    data = os.urandom(5 * MiB + 1)
    digest = push_blob(client, "keyed", data)
    assert os.path.exists(data_server.registry.ctx.plain_cache.path(f"kms/{key['KeyId']}", digest))  # (the push)
    before = decrypts()
    followed = client.get(f"/v2/keyed/blobs/{digest}", follow_redirects=True)
    assert followed.content == data and [r.status_code for r in followed.history] == [307]
    assert decrypts() == before + 1
    url = _redirected(client, f"/v2/keyed/blobs/{digest}").headers["Location"]
    assert decrypts() == before + 1  # a 307 asks nothing
    for n in (2, 3):  # each download of the URL once
        assert httpx.get(url, timeout=30).content == data
        assert decrypts() == before + n
    kms.disable_key(KeyId=key["KeyId"])  # after the 307: the download is refused all the same, naming the key
    refused = httpx.get(url, timeout=30)
    assert_oci_error(refused, 403, "DENIED")
    assert key["KeyId"] in refused.text and data[:64] not in refused.content
    assert not os.path.exists(data_server.registry.ctx.plain_cache.path(f"kms/{key['KeyId']}", digest))
    assert_oci_error(client.get(f"/v2/keyed/blobs/{digest}"), 403, "DENIED")  # (not cached any more: in-band)
    assert httpx.head(url, timeout=30).status_code == 200  # (a HEAD reads no content: the link is its right)


def _blob_gets(registry, repository: str, endpoint: str | None = None) -> tuple[int, int]:
    """(bytes, requests) metered as blob_get for ``repository`` (on ``endpoint``), unflushed counts included."""
    rows = registry.metering.transfer_totals()
    picked = [r for r in rows if r[1] == repository and r[4] == "blob_get" and endpoint in (None, r[2])]
    return sum(r[5] for r in picked), sum(r[6] for r in picked)


def _metered(registry, repository: str, requests: int, endpoint: str | None = None) -> tuple[int, int]:
    """The blob_get counts once ``requests`` are in (a download is metered just after its last byte goes out)."""
    deadline = time.monotonic() + 10
    counts = _blob_gets(registry, repository, endpoint)
    while counts[1] < requests and time.monotonic() < deadline:
        time.sleep(0.02)
        counts = _blob_gets(registry, repository, endpoint)
    return counts


@sqlite_only
def test_every_download_of_a_layer_url_is_metered_and_a_redirect_is_not(data_server, client, server, aws):
    registry = data_server.registry
    data = os.urandom(5 * MiB + 3)
    digest = push_blob(client, "repo", data)
    assert _blob_gets(registry, "repo") == (0, 0)
    followed = client.get(f"/v2/repo/blobs/{digest}", follow_redirects=True)  # a redirect followed once: once
    assert followed.content == data and [r.status_code for r in followed.history] == [307]
    assert _metered(registry, "repo", 1) == (len(data), 1)
    url = _redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"]  # a 307 not followed: nothing
    assert httpx.head(url, timeout=30).status_code == 200  # a HEAD sends no layer: nothing
    base, token = url.split("/layers/")
    assert httpx.get(f"{base}/layers/{token[:-2]}AA", timeout=30).status_code == 403  # refused: nothing
    for n in (2, 3):  # one URL downloaded twice: twice
        assert httpx.get(url, timeout=30).content == data
        assert _metered(registry, "repo", n) == (n * len(data), n)
    assert httpx.get(url, headers={"Range": "bytes=10-109"}, timeout=30).status_code == 206  # a range: its bytes
    assert _metered(registry, "repo", 4) == (3 * len(data) + 100, 4)
    registry.settings.plaintext_cache_on_push = False
    streamed = os.urandom(6 * MiB)
    other = push_blob(client, "repo", streamed)  # not cached: streamed by the data listener, metered all the same
    token, _ = signer_for(data_server.identity).token("000000000000", "repo", other)
    assert httpx.get(f"{base}/layers/{token}", timeout=30).content == streamed
    assert _metered(registry, "repo", 5) == (3 * len(data) + 100 + len(streamed), 5)
    small = os.urandom(1000)  # in-band /v2/ GETs are metered where they are answered, as before
    assert client.get(f"/v2/repo/blobs/{push_blob(client, 'repo', small)}").content == small
    assert _metered(registry, "repo", 6) == (3 * len(data) + 200 + len(streamed) + 900, 6)
    # GetDownloadUrlForLayer hands out a URL and meters nothing; each download of it is metered
    aws("ecr").create_repository(repositoryName="app")
    push_blob(client, "app", b"{}")
    layer = push_blob(client, "app", data)
    assert put_manifest(client, "app", "v1", image_manifest(b"{}", [data])).status_code == 201
    ecr_url = aws("ecr").get_download_url_for_layer(repositoryName="app", layerDigest=layer)["downloadUrl"]
    assert _blob_gets(registry, "app") == (0, 0)
    assert httpx.get(ecr_url, timeout=30).content == data
    assert _metered(registry, "app", 1) == (len(data), 1)


@sqlite_only
def test_a_download_cut_off_is_metered_for_the_bytes_that_left(data_server, client):
    data = os.urandom(32 * MiB)
    digest = push_blob(client, "repo", data)
    url = urlsplit(_redirected(client, f"/v2/repo/blobs/{digest}").headers["Location"])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", data_server.data_port))
        sock.sendall(f"GET {url.path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        received = 0
        while received < MiB:
            received += len(sock.recv(65536))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed with a reset
    metered, requests = _metered(data_server.registry, "repo", 1)
    assert requests == 1 and received - 1000 < metered < len(data)  # (the head was part of what was received)


@sqlite_only
def test_a_download_through_a_vpc_endpoint_is_metered_on_it(registry, settings):
    """The /v2/ GET came in on a private endpoint: its redirect's download counts as that endpoint's transfer
    (private), wherever the data listener is reached; a URL asked for on the public listener counts as public."""
    public, private, data = listening_socket(), listening_socket(), listening_socket()
    settings.data_listen = f"127.0.0.1:{data.getsockname()[1]}"
    endpoint = ("127.0.0.1", private.getsockname()[1])
    with serve(settings, registry, [public, private], {endpoint: "vpce-0abc1234"}, data) as running:
        blob = os.urandom(5 * MiB)
        with httpx.Client(base_url=running.url, headers=running.basic_auth, timeout=30) as c:
            digest = push_blob(c, "repo", blob)
        via = f"http://127.0.0.1:{endpoint[1]}/v2/repo/blobs/{digest}"
        r = httpx.get(via, headers=running.basic_auth, timeout=30, follow_redirects=True)
        assert r.content == blob and r.history[0].status_code == 307
        assert _metered(registry, "repo", 1, "vpce-0abc1234") == (len(blob), 1)
        rows = [row for row in registry.metering.transfer_totals() if row[4] == "blob_get"]
        assert [(row[2], row[3]) for row in rows] == [("vpce-0abc1234", "private")]
        r = httpx.get(f"{running.url}/v2/repo/blobs/{digest}", headers=running.basic_auth, follow_redirects=True)
        assert r.content == blob and _metered(registry, "repo", 1, "public") == (len(blob), 1)
