"""Real S3-compatible servers for tests, and a fresh bucket per test.

* ``radosgw`` — Ceph's RADOS Gateway on a single-node Ceph cluster (``scripts/ceph-rgw.sh``): a real S3
  implementation that checks SigV4 and presigned URLs and enforces multipart rules as AWS does. Started once per
  test session and shared by the xdist workers (a file lock and a list of the worker processes that use it; the
  last one to leave stops it). Missing ceph packages skip these tests on a developer's machine and fail them in CI.
* ``moto`` — moto's standalone server (``moto_server``), one per test process: fast, but checks no signatures.

``s3_server`` runs a test on both; ``rgw`` only on radosgw. Soko talks to either over HTTP with botocore exactly as
it talks to AWS S3 or MinIO.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import pytest
from botocore.config import Config

from soko.storage.s3 import S3Driver, S3Location
from tests.e2e.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
CEPH_RGW = ROOT / "scripts" / "ceph-rgw.sh"
CEPH_TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph-authtool", "monmaptool", "osdmaptool")
#: the listing page of ``s3_driver``: the suites list past a page with 110 keys instead of 1,100 (1,100 PUTs cost
#: ~12 s on moto); tests/storage/test_s3.py lists past the store's own 1,000-key page once
TEST_LIST_PAGE = 100
MOTO_KEYS = ("AKIAS3TEST0000000000", "s3-test-secret-0000000000000000000000000")  # moto accepts any


@dataclass(frozen=True)
class S3Server:
    name: str  # "radosgw" or "moto"
    endpoint: str
    access_key: str
    secret_key: str
    directory: Path | None = None  # radosgw: its Ceph cluster's directory (ceph.conf, keyrings, logs)

    def client(self):
        """A new client (as another node would have its own)."""
        return botocore.session.Session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    @functools.cached_property
    def shared_client(self):
        """One client for the session's fixtures (making one costs ~0.3 s)."""
        return self.client()

    def new_bucket(self, prefix: str = "soko") -> str:
        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.shared_client.create_bucket(Bucket=bucket)
        return bucket

    def storage_url(self, bucket: str, prefix: str = "registry") -> str:
        """Soko's ``storage_url`` for a bucket on this server (credentials go in ``env``, never in the URL)."""
        return f"s3://{bucket}/{prefix}?endpoint_url={self.endpoint}&addressing_style=path"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment that gives a `soko serve` process this server's credentials."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def s3_client(server: S3Server):
    return server.client()


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[S3Server]:
    binary = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}; see {log.name}")
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield S3Server("moto", f"http://127.0.0.1:{port}", *MOTO_KEYS)
    proc.terminate()
    proc.wait(10)
    log.close()


def _require_ceph() -> None:
    """Skip when ceph is not installed on a developer's machine; fail in CI (.ci/run sets CI=true), where
    scripts/bootstrap.sh --test installs it."""
    missing = [tool for tool in CEPH_TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)}: `scripts/ceph-rgw.sh install` (or bootstrap.sh --test) installs ceph"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _live_users(users: Path) -> list[Path]:
    alive = []
    for entry in users.iterdir() if users.exists() else []:
        try:
            os.kill(int(entry.name), 0)
            alive.append(entry)
        except (ValueError, ProcessLookupError):
            entry.unlink()  # a worker that died without leaving
        except PermissionError:
            alive.append(entry)
    return alive


def _ceph_rgw(command: str, directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CEPH_RGW), command, str(directory)], capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="session")
def rgw(tmp_path_factory) -> Iterator[S3Server]:
    """The radosgw of this test run, shared by its xdist workers: started by the first that needs it (~5 s), stopped
    by the last one to finish."""
    _require_ceph()
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory, users = shared / "radosgw", shared / "radosgw.users"
    with _locked(shared / "radosgw.lock"):
        users.mkdir(exist_ok=True)
        (users / str(os.getpid())).touch()
        started = _ceph_rgw("start", directory)
        if started.returncode != 0:
            (users / str(os.getpid())).unlink()
            pytest.fail(f"scripts/ceph-rgw.sh start failed ({started.returncode}):\n{started.stderr}")
    endpoint, access_key, secret_key = started.stdout.split()
    try:
        yield S3Server("radosgw", endpoint, access_key, secret_key, directory)
    finally:
        with _locked(shared / "radosgw.lock"):
            (users / str(os.getpid())).unlink(missing_ok=True)
            if not _live_users(users):
                _ceph_rgw("destroy", directory)  # nothing to keep: no graceful stop (~4 s), the space back at once


@pytest.fixture(scope="session", params=["radosgw", "moto"])
def s3_server(request) -> S3Server:
    """Each S3 server in turn: tests that take this run once on radosgw and once on moto."""
    return request.getfixturevalue("rgw" if request.param == "radosgw" else "moto")


@pytest.fixture
def s3_driver(s3_server) -> S3Driver:
    """An S3Driver on a new, empty bucket (under a key prefix, as deployments often use one), listing
    ``TEST_LIST_PAGE`` keys a page."""
    bucket = s3_server.new_bucket()
    location = S3Location.parse(s3_server.storage_url(bucket))
    return S3Driver(location, client=s3_server.shared_client, list_page_size=TEST_LIST_PAGE)
