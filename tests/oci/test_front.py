"""What the server answers outside the APIs: always JSON errors, never a stack trace or a plain-text page."""

from __future__ import annotations

from tests.oci.helpers import raw_request, raw_status


def _errors(response) -> list[dict]:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.json()["errors"]


def test_unknown_paths_and_methods_get_json_errors(client):
    r = client.get("/nope")
    assert r.status_code == 404 and _errors(r)[0]["code"] == "NOT_FOUND"
    r = client.get("/")
    assert r.status_code == 405 and r.headers["Allow"] == "POST" and _errors(r)
    r = client.delete("/metrics")
    assert r.status_code == 405 and _errors(r)
    r = client.get("/v2x/whatever")
    assert r.status_code == 404 and _errors(r)


def test_overlong_request_target_is_414(client):
    r = client.get("/v2/" + "a/" * 5000 + "tags/list")
    assert r.status_code == 414 and _errors(r)[0]["code"] == "UNSUPPORTED"
    assert client.get("/v2/").status_code == 200


def test_websocket_upgrade_is_not_served(server, auth_header):
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_header.items())
    request = (
        f"GET /v2/ HTTP/1.1\r\nHost: {server.host}\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: close\r\n\r\n"
    )
    status = raw_status(raw_request(server.url, request.encode(), read_timeout=5))
    assert status != 101
