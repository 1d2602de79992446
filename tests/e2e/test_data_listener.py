"""``soko serve --workers 2 --data-listen``: both workers share the data port, skopeo pulls a large layer through
the redirect byte for byte, and the server stops cleanly with the data listener in it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.oci.helpers import image_manifest, push_blob, put_manifest

from .servers import child_pids, free_port, start_soko, wait_for

pytestmark = [
    pytest.mark.xdist_group("workers"),
    pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo"),
]
MiB = 1 << 20


def test_two_workers_serve_layers_from_the_data_port_to_skopeo(tmp_path: Path) -> None:
    data_port = free_port()
    server = start_soko(tmp_path / "data", workers=2, extra_args=["--data-listen", f"127.0.0.1:{data_port}"])
    try:
        layer = os.urandom(9 * MiB + 5)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        with httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=60) as client:
            push_blob(client, "app", config.encode())
            digest = push_blob(client, "app", layer)
            r = put_manifest(client, "app", "v1", image_manifest(config.encode(), [layer]))
            assert r.status_code == 201, r.text
            for _ in range(4):  # fresh connections: both workers answer some, each redirecting to the shared port
                r = client.get(f"/v2/app/blobs/{digest}", headers={"Connection": "close"})
                assert r.status_code == 307 and f":{data_port}/layers/" in r.headers["Location"]
        user, password = server.credentials
        subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", "--src-creds", f"{user}:{password}",
             f"docker://{server.host}/app:v1", f"dir:{tmp_path / 'out'}"],
            check=True, capture_output=True, timeout=120,
        )
        assert (tmp_path / "out" / digest.split(":")[1]).read_bytes() == layer
        assert server.stop() == 0, server.log_tail()
        log = server.log_tail(200_000)  # (the access log is written in batches: read once the server is down)
        assert f"layer downloads (sendfile) on http://127.0.0.1:{data_port}" in log
        assert re.search(r'"path":"/layers/[^"]*","status":200,[^}]*"bytes_out":' + str(len(layer)), log), log[-3000:]
    finally:
        server.kill()


def _data_answers(port: int) -> None:
    for _ in range(8):  # fresh connections: both workers' listeners get some
        r = httpx.get(f"http://127.0.0.1:{port}/layers/garbage", headers={"Connection": "close"}, timeout=10)
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"


def test_a_killed_worker_is_replaced_with_its_data_listener_and_sigterm_frees_the_data_port(tmp_path: Path) -> None:
    data_port = free_port()
    server = start_soko(tmp_path / "data", workers=2, extra_args=["--data-listen", f"127.0.0.1:{data_port}"])
    try:
        wait_for(lambda: len(child_pids(server.pid)) == 2, "two workers", server)
        workers = child_pids(server.pid)
        os.kill(min(workers), signal.SIGKILL)
        wait_for(lambda: len(child_pids(server.pid) - workers) == 1 and len(child_pids(server.pid)) == 2,
                  "a replacement worker", server)
        _data_answers(data_port)
        with socket.create_connection(("127.0.0.1", data_port), timeout=30) as idle:
            idle.sendall(b"GET /layers/garbage HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}]}"):  # the whole answer (head and JSON body)
                answer += idle.recv(65536)
            assert answer.startswith(b"HTTP/1.1 403 ")  # then kept alive, idle
            assert server.stop() == 0, server.log_tail()
            assert idle.recv(65536) == b""  # closed by the stop, not left hanging
        with socket.socket() as again:  # no process listens on the data port any more (as a restart binds it)
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", data_port))
            again.listen()
    finally:
        server.kill()


@pytest.mark.skipif(not shutil.which("prlimit"), reason="needs prlimit (util-linux)")
def test_the_listeners_share_the_descriptor_budget_with_the_data_listener(tmp_path: Path) -> None:
    # 400 descriptors, 100 kept in reserve: the public listener and the data listener (two parts: a download holds
    # a socket and a file) get a third each. Were each cut as if alone, idle connections to both ports could take
    # every descriptor, and the registry could open no file and no database connection.
    data_port = free_port()
    template = "prlimit --nofile=400:400 {python} -m soko serve --listen {listen} --data-dir {data_dir} --workers 1"
    server = start_soko(tmp_path / "data", template=template,
                        extra_args=["--data-listen", f"127.0.0.1:{data_port}"])
    held: list[socket.socket] = []
    try:
        assert "open-files limit 400: up to 100 connections per worker and listener" in server.log_tail(), \
            server.log_tail()
        answered = 0
        for _ in range(160):
            conn = socket.create_connection(("127.0.0.1", data_port), timeout=10)
            held.append(conn)
            try:
                conn.sendall(b"GET /layers/garbage HTTP/1.1\r\nHost: a\r\n\r\n")
                answered += conn.recv(65536).startswith(b"HTTP/1.1 403 ")
            except OSError:  # refused: over the limit
                pass
        assert answered == 100
        for conn in held:
            conn.close()
        assert server.stop() == 0, server.log_tail()
    finally:
        for conn in held:
            conn.close()
        server.kill()


def test_a_loopback_data_listener_behind_a_public_listener_is_warned_about(tmp_path: Path) -> None:
    port = free_port()
    data = f"127.0.0.1:{free_port()}"
    server = start_soko(tmp_path / "data", port=port, extra_args=["--listen", f"0.0.0.0:{port}", "--data-listen", data])
    try:
        assert server.stop() == 0, server.log_tail()
        assert f"data_listen {data} is on loopback while the registry listens on 0.0.0.0:{port}" in server.log_tail()
    finally:
        server.kill()
