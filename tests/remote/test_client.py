"""soko.remote.RegistryClient against real registries on loopback (Distribution anonymous, with htpasswd Basic
auth and behind a Bearer token realm) and against a hostile server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from soko.remote import Credentials, RegistryClient, UpstreamError
from tests.e2e.servers import DISTRIBUTION_BIN, RegistryServer
from tests.remote.upstreams import TokenServer, answer, credentials, hostile_server, push_image, start_upstream

pytestmark = pytest.mark.skipif(not os.path.exists(DISTRIBUTION_BIN), reason="needs Debian's docker-registry")


@pytest.fixture
def anonymous(tmp_path: Path) -> Iterator[RegistryServer]:
    server = start_upstream(tmp_path / "anon")
    yield server
    server.kill()


def _roundtrip(client: RegistryClient) -> None:
    layer = os.urandom(3 << 20)
    digest, manifest = push_image(client, "team/app", "v1", [layer, b"small"])
    got = client.manifest("team/app", "v1")
    assert (got.digest, got.payload) == (digest, manifest)
    assert got.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert client.manifest("team/app", digest).payload == manifest
    assert client.manifest_head("team/app", "v1").digest == digest
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    with client.blob("team/app", layer_digest, size=len(layer)) as stream:
        assert b"".join(stream) == layer
    with pytest.raises(UpstreamError) as missing:
        client.manifest("team/app", "nope")
    assert missing.value.code == "NotFound"


def test_anonymous_push_and_pull(anonymous: RegistryServer) -> None:
    with RegistryClient(anonymous.url) as client:
        client.ping()
        _roundtrip(client)


def test_basic_auth(tmp_path: Path) -> None:
    server = start_upstream(tmp_path / "basic", "htpasswd")
    try:
        with RegistryClient(server.url, credentials()) as client:
            _roundtrip(client)
        with RegistryClient(server.url) as client, pytest.raises(UpstreamError) as anonymous:
            client.manifest("team/app", "v1")
        assert anonymous.value.code == "UpstreamAccessDenied"
        with RegistryClient(server.url, Credentials("puller", "wrong")) as client, pytest.raises(UpstreamError) as bad:
            client.manifest("team/app", "v1")
        assert bad.value.code == "UpstreamAccessDenied"
        assert "wrong" not in bad.value.message
    finally:
        server.kill()


def test_bearer_token_realm(tmp_path: Path) -> None:
    tokens = TokenServer(tmp_path)
    server = start_upstream(tmp_path / "token", "token", token_realm=tokens.realm, cert=tokens.cert_path)
    try:
        with RegistryClient(server.url, credentials()) as client:
            _roundtrip(client)
        assert tokens.issued >= 1
        with RegistryClient(server.url, Credentials("puller", "wrong")) as client, pytest.raises(UpstreamError) as bad:
            client.manifest("team/app", "v1")
        assert bad.value.code == "UpstreamAccessDenied"
    finally:
        server.kill()
        tokens.close()


def _endless(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    handler.end_headers()  # no length: a body that never ends
    piece = b"x" * 65536
    for _ in range(100_000):
        handler.wfile.write(piece)


def test_hostile_upstream() -> None:
    good = b'{"schemaVersion":2}'
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    other = "sha256:" + "0" * 64
    routes = {
        "/v2/wrong/manifests/v1": answer(
            200, good, {"Docker-Content-Digest": other, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        ),
        f"/v2/wrong/manifests/{other}": answer(200, good),
        "/v2/big/manifests/v1": answer(200, b"x" * (5 << 20)),
        "/v2/endless/manifests/v1": _endless,
        f"/v2/endless/blobs/{digest}": _endless,
        "/v2/loop/": answer(302, b"", {"Location": "/v2/loop/again"}),
        "/v2/limited/": answer(429),
        "/v2/broken/": answer(503),
        f"/v2/short/blobs/{digest}": answer(200, good[:-1]),
        "/v2/weird-auth/": answer(401, b"", {"WWW-Authenticate": 'Negotiate realm="x"'}),
    }
    with hostile_server(routes) as url, RegistryClient(url, timeout=10) as client:
        cases = [
            (lambda: client.manifest("wrong", "v1"), "Invalid"),
            (lambda: client.manifest("wrong", other), "Invalid"),
            (lambda: client.manifest("big", "v1"), "Invalid"),
            (lambda: client.manifest("endless", "v1"), "Invalid"),
            (lambda: b"".join(client.blob("endless", digest, size=len(good))), "Invalid"),
            (lambda: client.manifest("loop", "v1"), "UpstreamUnavailable"),
            (lambda: client.manifest("limited", "v1"), "UpstreamTooManyRequests"),
            (lambda: client.manifest("broken", "v1"), "UpstreamUnavailable"),
            (lambda: b"".join(client.blob("short", digest, size=len(good))), "Invalid"),
            (lambda: client.manifest("weird-auth", "v1"), "UpstreamAccessDenied"),
        ]
        for call, code in cases:
            with pytest.raises(UpstreamError) as failure:
                call()
            assert failure.value.code == code, failure.value.message


def test_unreachable() -> None:
    with RegistryClient("http://127.0.0.1:9", timeout=2) as client, pytest.raises(UpstreamError) as down:
        client.manifest("a/b", "v1")
    assert down.value.code == "UpstreamUnavailable"
