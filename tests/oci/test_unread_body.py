"""A request answered before its body is read (a refused chunk, an oversized manifest) leaves the connection in the
middle of a request: the server must say ``Connection: close`` so the client does not send its next request into a
socket that is closing ("server disconnected without sending a response")."""

from __future__ import annotations

import httpx

from tests.oci.helpers import sha256, start_upload


def _client(server, auth_header) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers=auth_header)


def test_a_refused_chunk_closes_the_connection(server, auth_header) -> None:
    with _client(server, auth_header) as c:
        location = start_upload(c, "repo")
        r = c.patch(location, content=b"x" * 20_000, headers={"Content-Range": "5-20004"})
        assert r.status_code == 416
        assert r.headers.get("connection") == "close"


def test_a_streamed_refused_chunk_closes_the_connection(server, auth_header) -> None:
    def body():
        for _ in range(20):
            yield b"y" * 4096

    with _client(server, auth_header) as c:
        location = start_upload(c, "repo")
        r = c.patch(location, content=body(), headers={"Content-Range": "7-81926"})
        assert r.status_code == 416
        assert r.headers.get("connection") == "close"


def test_a_read_body_keeps_the_connection(server, auth_header) -> None:
    data = b"z" * 30_000
    with _client(server, auth_header) as c:
        location = start_upload(c, "repo")
        r = c.patch(location, content=data)
        assert r.status_code == 202
        assert "connection" not in r.headers
        r = c.put(r.headers["Location"], params={"digest": sha256(data)})
        assert r.status_code == 201
        assert "connection" not in r.headers
        assert "connection" not in c.get("/v2/").headers


def test_the_next_request_after_a_refused_chunk_succeeds(server, auth_header) -> None:
    """Refused and accepted chunks alternate on one client's pool: each accepted one gets its answer."""
    with _client(server, auth_header) as c:
        for i in range(30):
            location = start_upload(c, "repo")
            assert c.patch(location, content=b"r" * 8192, headers={"Content-Range": "9-8200"}).status_code == 416
            data = bytes([i]) * (10_000 + i)
            r = c.patch(location, content=data)
            assert r.status_code == 202, r.text
            assert c.put(r.headers["Location"], params={"digest": sha256(data)}).status_code == 201
