"""A blob upload declared bigger than the image size quota allows is refused (413) before its body is read: the
client that sent ``Expect: 100-continue`` never gets the go-ahead, and one that did not gets the answer while its
body is still unsent."""

from __future__ import annotations

import json

import sqlalchemy as sa

from soko.meta.schema import uploads
from tests.oci.helpers import raw_request

LIMIT = 1000
DIGEST = "sha256:" + "0" * 64


def _send_head(server, auth_header, method: str, target: str, headers: dict[str, str]) -> bytes:
    """Send only the request head (never the body it announces); whatever the server answers."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {server.host}"]
    lines += [f"{k}: {v}" for k, v in {**auth_header, **headers}.items()]
    return raw_request(server.url, ("\r\n".join(lines) + "\r\n\r\n").encode(), read_timeout=10)


def _status_and_error(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["errors"][0]["code"] if body else ""


def _sessions(registry) -> dict[str, int]:
    with registry.ctx.db.read() as conn:
        return dict(conn.execute(sa.select(uploads.c.id, uploads.c.size)).all())


def test_oversized_uploads_get_413_before_the_body(server, client):
    auth_header = server.basic_auth
    registry = server.registry
    registry.repositories.quotas.set(registry.settings.account_id, "max_image_size", LIMIT)
    base = "/v2/quota/upfront/blobs/uploads/"

    # A monolithic POST, with and without Expect: no 100 Continue, no session created.
    for expect in ({"Expect": "100-continue"}, {}):
        response = _send_head(server, auth_header, "POST", f"{base}?digest={DIGEST}", {
            "Content-Length": str(LIMIT + 1), "Content-Type": "application/octet-stream", **expect})
        assert not response.startswith(b"HTTP/1.1 100"), response[:200]
        status, code = _status_and_error(response)
        assert (status, code) == (413, "SIZE_INVALID"), response[:500]
        assert b"max_image_size" in response  # says what to do
    assert _sessions(registry) == {}

    # A session that holds 600 bytes has 400 left: a 401-byte PATCH is refused at once, by length or by range.
    started = client.post(base)
    location = started.headers["Location"]
    assert client.patch(location, content=b"a" * 600, headers={"Content-Range": "0-599"}).status_code == 202
    declared = [
        {"Content-Length": "401", "Content-Range": "600-1000"},
        {"Transfer-Encoding": "chunked", "Content-Range": "600-1000"},  # the range is all it says
    ]
    for headers in declared:
        response = _send_head(server, auth_header, "PATCH", location, {
            "Content-Type": "application/octet-stream", "Expect": "100-continue", **headers})
        assert not response.startswith(b"HTTP/1.1 100"), response[:200]
        assert _status_and_error(response) == (413, "SIZE_INVALID"), response[:500]
    # The final PUT is held to the same.
    response = _send_head(server, auth_header, "PUT", f"{location}?digest={DIGEST}", {
        "Content-Length": "401", "Expect": "100-continue"})
    assert _status_and_error(response) == (413, "SIZE_INVALID"), response[:500]
    assert list(_sessions(registry).values()) == [600]  # untouched, and free to go on
    assert client.patch(location, content=b"b" * 400, headers={"Content-Range": "600-999"}).status_code == 202
