"""A manifest PUT holds its body whole, so it shares POST /'s protections (``soko.http.bodies``): one per-process
budget charged by the bytes that arrived, a minimum rate after a grace period, a longest pause, the size limit —
answered in OCI's error format, with ``Connection: close`` when the body is left unread."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import ROOT_KEY_ID
from tests.oci.helpers import OCI_MANIFEST, image_manifest, push_blob, sha256
from tests.rawhttp import answer, connect, trickle, wait_until

NAME = "bodies/app"


@pytest.fixture
def database_url(tmp_path) -> str:
    """HTTP-layer behaviour: SQLite only (the manifest suite covers PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.fixture
def manifest(client) -> bytes:
    config, layer = b'{"os":"linux"}', b"a layer"
    push_blob(client, NAME, config)
    push_blob(client, NAME, layer)
    return json.dumps(image_manifest(config, [layer])).encode()


def _head(server, length: int | None, reference: str = "v1") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    lines = [
        f"PUT /v2/{NAME}/manifests/{reference} HTTP/1.1",
        f"Host: {server.host}",
        f"Authorization: Basic {server.token}",
        f"Content-Type: {OCI_MANIFEST}",
        framing,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _error(got: tuple[int, dict[str, str], dict]) -> tuple[int, str]:
    status, headers, body = got
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body)
    return status, body["errors"][0]["code"]


def test_a_manifest_still_goes_in_whole(server, client, manifest) -> None:
    r = client.put(f"/v2/{NAME}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(manifest)
    assert "connection" not in r.headers
    assert server.app.bodies.used == 0


@pytest.mark.parametrize("every", [0.2, None])  # a byte every 0.2 s, or the head and then nothing
def test_a_trickling_manifest_is_cut_off(server, manifest, monkeypatch, every) -> None:
    monkeypatch.setattr("soko.http.bodies.GRACE", 0.5)
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(_head(server, len(manifest)) + manifest[:1])
        trickle(sock, every)
        got = answer(sock)
    assert _error(got) == (408, "MANIFEST_INVALID"), got
    assert got[1].get("connection") == "close"
    assert time.monotonic() - started < 10
    assert server.app.bodies.used == 0


def test_a_manifest_that_stops_midway_is_cut_off(server, manifest, monkeypatch) -> None:
    monkeypatch.setattr("soko.http.bodies.GRACE", 30.0)
    monkeypatch.setattr("soko.http.bodies.MAX_GAP", 0.5)
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(_head(server, len(manifest)) + manifest[:-1])
        got = answer(sock)
    assert _error(got) == (408, "MANIFEST_INVALID"), got
    assert "no byte of the request body arrived" in got[2]["errors"][0]["message"]
    assert time.monotonic() - started < 10


def test_a_cut_off_manifest_is_invalid(server, manifest) -> None:
    with connect(server) as sock:
        sock.sendall(_head(server, len(manifest)) + manifest[:-5])
        sock.shutdown(socket.SHUT_WR)  # the client gives up mid-body (and still reads the answer)
        got = answer(sock)
    assert _error(got) == (400, "MANIFEST_INVALID"), got
    assert server.app.bodies.used == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_manifest_is_413_before_or_while_it_arrives(server, settings, chunked) -> None:
    limit = settings.max_manifest_size
    with connect(server) as sock:
        if chunked:  # no declared length: refused once the bytes pass the limit
            piece = b"x" * (64 << 10)
            sock.sendall(_head(server, None))
            try:
                for _ in range(limit // len(piece) + 2):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                pass  # answered and closed while we were still sending
        else:  # refused from its head, no byte of it read
            sock.sendall(_head(server, limit + 1))
        got = answer(sock)
    assert _error(got) == (413, "SIZE_INVALID"), got
    assert got[1].get("connection") == "close"


def test_manifests_and_aws_documents_share_one_budget(server, client, manifest) -> None:
    """One budget per process; POST / bodies (anyone who knows a key id can send one) fill at most 3/4 of it, so
    they cannot starve manifest PUTs, whose senders are authenticated before their body is read."""
    budget = server.app.bodies
    budget.limit = 64 << 10
    held = 40 << 10
    with connect(server) as aws_body:  # an ECR document that has not finished arriving holds 40 KiB
        aws_body.sendall(_aws_head(server, held + 1) + b" " * held)
        wait_until(lambda: budget.used == held, f"the AWS body never arrived ({budget.used})")
        with connect(server) as sock:  # a manifest that cannot fit beside it
            sock.sendall(_head(server, 30 << 10))
            got = answer(sock)
        assert _error(got) == (503, "UNAVAILABLE"), got
        assert got[1].get("retry-after") == "1" and got[1].get("connection") == "close"
        with connect(server) as sock:  # another AWS document would pass 3/4 of the budget: refused
            sock.sendall(_aws_head(server, 10 << 10))
            status, _, body = answer(sock)
        assert (status, body.get("__type")) == (503, "ServiceUnavailable"), body
        r = client.put(f"/v2/{NAME}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text  # the quarter kept for authenticated bodies
    wait_until(lambda: budget.used == 0, f"a closed connection's body is still held ({budget.used})")


def test_unauthenticated_manifest_puts_are_refused_before_their_body(server) -> None:
    with connect(server) as sock:
        sock.sendall(_head(server, 4 << 20).replace(f"Authorization: Basic {server.token}\r\n".encode(), b""))
        got = answer(sock)
    assert _error(got) == (401, "UNAUTHORIZED"), got
    assert got[1].get("connection") == "close"
    assert httpx.get(server.url + "/v2/").status_code == 401  # and the server is fine


def _aws_head(server, length: int) -> bytes:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scope = f"{ROOT_KEY_ID}/{stamp[:8]}/us-east-1/ecr/aws4_request"
    lines = [
        "POST / HTTP/1.1",
        f"Host: {server.host}",
        f"Content-Length: {length}",
        f"X-Amz-Date: {stamp}",
        "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        "Content-Type: application/x-amz-json-1.1",
        f"Authorization: AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={'0' * 64}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
