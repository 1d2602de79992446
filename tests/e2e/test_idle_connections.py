"""Idle connections cannot starve the registry (issue 11, item 1).

Clients that connect and never send a byte used to hold granian's per-socket connection permits (1,024) and, with
the usual 1,024-descriptor soft limit, every descriptor: the next client was never accepted. Soko now lifts its
descriptor limit to the hard limit and sizes the permits from it. The full-scale figure (5,000 idle connections,
re-opened as they close, with probes timed) is ``bench/idle_connections.py``; this is the bounded version.
"""

from __future__ import annotations

import resource
import socket
from pathlib import Path

import httpx
import pytest

from .servers import start_soko

pytestmark = pytest.mark.xdist_group("idle")

IDLE = 1_500  # more than granian's default permits (1,024) and than a 1,024-descriptor limit


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line in /proc/<pid>/limits")


def test_idle_connections_leave_the_registry_serving(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * IDLE + 1_024:
        pytest.skip(f"the hard open-files limit ({hard}) is too low to hold {IDLE} connections on both ends")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1_024, hard))  # the server inherits the common default soft limit
    try:
        server = start_soko(tmp_path / "data")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the client ends
    idle: list[socket.socket] = []
    try:
        assert _limits(server.pid)[0] == _limits(server.pid)[1], "soko serve keeps the soft open-files limit"
        host, port = server.host.split(":")
        for _ in range(IDLE):
            idle.append(socket.create_connection((host, int(port)), timeout=10))
        # A generous liveness bound, not a timing claim: before the fix these never got an answer at all.
        with httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=15) as client:
            for _ in range(3):
                assert client.get("/v2/").status_code == 200
                assert client.get("/v2/_catalog").status_code == 200
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        server.stop()
