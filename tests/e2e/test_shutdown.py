"""`soko serve` stops gracefully: on SIGTERM it stops accepting, finishes the requests in flight, exits 0."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.oci.helpers import sha256

from .servers import start_soko

pytestmark = pytest.mark.xdist_group("shutdown")


def _response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_an_upload_in_flight_finish(tmp_path: Path, workers: int) -> None:
    server = start_soko(tmp_path / "data", workers=workers)
    try:
        body = os.urandom(4 << 20)
        digest = sha256(body)
        auth = "".join(f"{k}: {v}\r\n" for k, v in server.auth_header().items())
        host, port = server.host.split(":")
        upload = socket.create_connection((host, int(port)))
        upload.sendall(
            f"POST /v2/drain/test/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {server.host}\r\n{auth}"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.5)  # the request is being handled: half its body is in
        server.proc.send_signal(15)
        time.sleep(0.5)
        assert server.proc.poll() is None, "the server exited with a request in flight"
        upload.sendall(body[len(body) // 2 :])
        head = _response(upload)
        upload.close()
        assert head.startswith(b"HTTP/1.1 201"), head[:500]
        assert f"docker-content-digest: {digest}".encode() in head.lower(), head[:500]
        assert server.proc.wait(timeout=30) == 0, server.log_tail()
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection((host, int(port)), timeout=2).close()
    finally:
        server.kill()
    # the blob landed whole: a new server on the same data serves it
    again = start_soko(tmp_path / "data", workers=1)
    try:
        with httpx.Client(base_url=again.url, headers=again.auth_header(), timeout=30) as client:
            got = client.get(f"/v2/drain/test/blobs/{digest}")
            assert got.status_code == 200 and got.content == body
    finally:
        again.stop()
