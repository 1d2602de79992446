"""kill -9 during a PATCH: the restarted server does not honour the dead process's claim on the upload session
(it used to answer 416 "another request is writing" for 5 minutes)."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from .servers import start_soko

pytestmark = pytest.mark.xdist_group("shutdown")


def _wait_until_claimed(database: Path, upload_id: str) -> None:
    """Until the streaming chunk holds the session's claim (else the kill would not reproduce anything)."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT writer FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        if row and row[0]:
            return
        assert time.monotonic() < deadline, "the chunk never claimed the upload session"
        time.sleep(0.05)


def test_a_patch_cut_by_kill_9_leaves_the_session_writable(tmp_path: Path) -> None:
    server = start_soko(tmp_path / "data", workers=1)
    try:
        with httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=30) as client:
            started = client.post("/v2/crash/claim/blobs/uploads/")
            assert started.status_code == 202, started.text
            location = started.headers["Location"]
        body = os.urandom(1 << 20)
        auth = "".join(f"{k}: {v}\r\n" for k, v in server.auth_header().items())
        host, port = server.host.split(":")
        patch = socket.create_connection((host, int(port)))
        patch.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: {server.host}\r\n{auth}Content-Type: application/octet-stream\r\n"
            f"Content-Range: 0-{len(body) - 1}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        _wait_until_claimed(tmp_path / "data" / "metadata.db", location.rstrip("/").rsplit("/", 1)[-1])
    finally:
        server.kill()  # SIGKILL to the whole process group
    patch.close()
    again = start_soko(tmp_path / "data", workers=1)
    try:
        with httpx.Client(base_url=again.url, headers=again.auth_header(), timeout=30) as client:
            status = client.get(location)
            assert status.status_code == 204, status.text
            resumed = client.patch(
                location, content=body, headers={"Content-Range": f"0-{len(body) - 1}",
                                                 "Content-Type": "application/octet-stream"}
            )
            assert resumed.status_code == 202, (resumed.status_code, resumed.text)
            assert resumed.headers["Range"] == f"0-{len(body) - 1}"
    finally:
        again.stop()
