"""``soko serve --workers 2`` survives its workers dying, and its workers do not outlive it (issue 11, item 9)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from .servers import RegistryServer, _spawn, child_pids, soko_argv, start_soko, wait_for

pytestmark = pytest.mark.xdist_group("workers")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _serves(server: RegistryServer) -> None:
    with httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=10) as client:
        for _ in range(6):  # fresh connections: both workers get some
            assert client.get("/v2/", headers={"Connection": "close"}).status_code == 200


def test_a_killed_worker_is_replaced_and_logged(tmp_path: Path) -> None:
    server = start_soko(tmp_path / "data", workers=2)
    try:
        wait_for(lambda: len(child_pids(server.pid)) == 2, "two workers", server)
        workers = child_pids(server.pid)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(child_pids(server.pid) - workers) == 1 and len(child_pids(server.pid)) == 2,
                  "a replacement worker", server)
        log = server.log_tail(20_000)
        assert f"(pid {victim}) was killed by signal 9 (SIGKILL)" in log, log
        assert "restarted (pid" in log, log
        _serves(server)
        assert server.stop() == 0, server.log_tail()
    finally:
        server.kill()


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    server = start_soko(tmp_path / "data", workers=2)
    try:
        wait_for(lambda: len(child_pids(server.pid)) == 2, "two workers", server)
        workers = child_pids(server.pid)
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(10)
        wait_for(lambda: not any(_alive(pid) for pid in workers), "orphaned workers exited", server)
        # the port is free: a new server binds the same address and serves the same data
        again = _spawn("soko", soko_argv(server.host, server.data_dir, 2), server.host, server.data_dir,
                       tmp_path / "again.log", {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")})
        again.credentials = server.credentials
        try:
            again.wait_ready()
            _serves(again)
            assert again.stop() == 0, again.log_tail()
        finally:
            again.kill()
    finally:
        server.kill()
