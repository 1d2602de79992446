"""`scripts/cluster.sh` as the README tells a new user to run it: start, use what it prints, admin, stop."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.databases import PG_URL

from .aws_cli import AwsCli
from .layout import ImageRef
from .skopeo import Skopeo
from .test_skopeo_roundtrip import push

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "cluster.sh"


def _free_run(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    for _ in range(50):
        first = random.randrange(20000, 60000)
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOKO_", "AWS_"))}
    env["SOKO_CLUSTER_PG_URL"] = PG_URL.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    result = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
                            check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"cluster.sh {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _databases() -> set[str]:
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_start_use_and_stop(tmp_path: Path, images: dict[str, ImageRef]) -> None:
    port, database = _free_run(3), f"soko_cluster_{uuid.uuid4().hex[:8]}"
    options = ["--dir", "cluster", "--port", str(port), "--database", database]
    started = _run("start", *options, cwd=tmp_path)
    try:
        assert f"nodes: 127.0.0.1:{port} 127.0.0.1:{port + 1} 127.0.0.1:{port + 2}" in started.stdout
        assert f"source {tmp_path}/cluster/client.env" in started.stdout
        client = dict(line.removeprefix("export ").split("=", 1)
                      for line in (tmp_path / "cluster" / "client.env").read_text().splitlines())
        assert client["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        key = {"AccessKeyId": client["AWS_ACCESS_KEY_ID"], "SecretAccessKey": client["AWS_SECRET_ACCESS_KEY"]}
        aws = AwsCli.for_key(client["AWS_ENDPOINT_URL"], key, tmp_path / "home")
        aws.run("ecr", "create-repository", "--repository-name", "team/app")
        skopeo = Skopeo.create(tmp_path / "skopeo-home")
        password = aws.login_password()
        for node in range(3):
            skopeo.add_registry(f"127.0.0.1:{port + node}", ("AWS", password))
        push(skopeo, images["single"], f"docker://127.0.0.1:{port}/team/app:v1")
        manifest = images["single"].top_manifest()
        for node in range(3):  # the same image on every node
            assert skopeo.inspect_raw(f"docker://127.0.0.1:{port + node}/team/app:v1") == manifest
        fsck = _run("soko", "--dir", "cluster", "fsck", cwd=tmp_path)
        assert "no problems" in fsck.stdout + fsck.stderr
        status = _run("status", "--dir", "cluster", cwd=tmp_path).stdout
        assert status.count("running") == 4, status  # three nodes and the S3 server
    finally:
        _run("stop", "--dir", "cluster", cwd=tmp_path)
    assert database not in _databases()
    assert not list((tmp_path / "cluster").glob("*.pid"))
