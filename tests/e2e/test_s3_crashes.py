"""Crashes and outages on object storage (radosgw), with nodes sharing one PostgreSQL database and one bucket:

* a node killed (SIGKILL) in the middle of a chunk: the upload resumes on another node from the last recorded
  offset, and the bytes the dead node stored past it are dropped;
* a node killed in the middle of a garbage collection (rows deleted with their tombstones committed, the objects
  being deleted): nothing a manifest uses is lost, fsck is clean, the next `soko gc` finishes the deletions;
* the S3 gateway going down mid-push: the client gets a retryable 503 in the OCI error format, nothing is half
  visible (no blob, the session's offset unchanged), and the push completes once the gateway is back.

Every test ends with `soko fsck` (re-hashing every blob in the bucket) reporting no problems.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from soko.crypto.segments import sealed_size
from soko.storage.s3 import PART_SIZE
from tests.databases import fresh_database
from tests.oci.helpers import assert_oci_error, image_manifest, push_blob, sha256
from tests.s3 import S3Server, rgw  # noqa: F401 - fixture

from .servers import RegistryServer, free_port, start_soko

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("s3-crashes")]

ROOT = ("AKIAS3CRASHROOT00001", "s3-crash-root-secret-0000000000000000000")
PREFIX = "registry"


class Cluster:
    """The environment of nodes on one database and one bucket; starts nodes and runs soko's admin commands."""

    def __init__(self, workdir: Path, env: dict[str, str], s3: S3Server, bucket: str) -> None:
        self.workdir, self.env, self.s3, self.bucket = workdir, env, s3, bucket
        self.nodes: list[RegistryServer] = []

    def start(self, name: str, **env: str) -> RegistryServer:
        node = start_soko(self.workdir / name, env={**self.env, **env})
        self.nodes.append(node)
        return node

    def soko(self, *args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}
        return subprocess.run(
            [sys.executable, "-m", "soko", *args, "--data-dir", str(self.workdir / "admin")],
            env={**clean, **self.env}, capture_output=True, text=True, timeout=300, check=False,
        )

    def assert_fsck_clean(self) -> None:
        fsck = self.soko("fsck")
        assert fsck.returncode == 0 and "no problems found" in fsck.stdout, fsck.stdout + fsck.stderr

    def keys(self, below: str) -> dict[str, int]:
        """Key → size of the bucket's objects below a path of Soko's (encrypted at rest: below sealed/)."""
        pages = self.s3.shared_client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{PREFIX}/sealed/{below}"
        )
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture
def cluster(rgw: S3Server, tmp_path: Path) -> Iterator[Cluster]:  # noqa: F811
    bucket = rgw.new_bucket("soko-crash")
    with fresh_database("postgresql", str(tmp_path)) as database_url:
        env = {
            "SOKO_DATABASE_URL": database_url,
            "SOKO_STORAGE_URL": rgw.storage_url(bucket, PREFIX),
            **rgw.env,
            "SOKO_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "SOKO_ROOT_ACCESS_KEY_ID": ROOT[0],
            "SOKO_ROOT_SECRET_ACCESS_KEY": ROOT[1],
            "SOKO_LIFECYCLE_INTERVAL": "0",
            "SOKO_METERING_INTERVAL": "0",
        }
        cluster = Cluster(tmp_path, env, rgw, bucket)
        try:
            yield cluster
        finally:
            for node in cluster.nodes:
                node.kill()


def _client(node: RegistryServer) -> httpx.Client:
    return httpx.Client(base_url=node.url, headers=node.auth_header(), timeout=120)


def _upload_id(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


def _until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_node_killed_mid_chunk_the_upload_resumes_on_another_node(cluster: Cluster) -> None:
    node_a, node_b = cluster.start("a"), cluster.start("b")
    first, second = os.urandom(PART_SIZE + (1 << 20)), os.urandom(20 << 20)
    with _client(node_a) as a:
        location = a.post("/v2/crash/upload/blobs/uploads/").headers["Location"]
        r = a.patch(location, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202, r.text
    parts = f"uploads/{_upload_id(location)}/data~parts/"
    # The second chunk streams to node A, which dies once it has stored a full part past the recorded offset.
    host, port = node_a.host.split(":")
    auth = "".join(f"{k}: {v}\r\n" for k, v in node_a.auth_header().items())
    patch = socket.create_connection((host, int(port)))
    patch.sendall(
        f"PATCH {location} HTTP/1.1\r\nHost: {node_a.host}\r\n{auth}Content-Type: application/octet-stream\r\n"
        f"Content-Range: {len(first)}-{len(first) + len(second) - 1}\r\nContent-Length: {len(second)}\r\n\r\n".encode()
    )
    patch.sendall(second[: 16 << 20])  # enough for the driver to store a part of it, however it cuts parts
    held = sealed_size(len(first))
    _until(lambda: sum(cluster.keys(parts).values()) > held, "node A stored a part of the second chunk")
    node_a.kill()
    patch.close()

    with _client(node_b) as b:
        status = b.get(location)  # only what was recorded counts
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}", status.text
        # Node B takes the dead process's claim over (same machine: it can tell the process is gone; from another
        # machine after the claim's heartbeat goes stale) and writes from the recorded offset.
        r = b.patch(location, content=second, headers={"Content-Range": f"{len(first)}-{len(first + second) - 1}"})
        assert r.status_code == 202, r.text
        digest = "sha256:" + hashlib.sha256(first + second).hexdigest()
        r = b.put(location, params={"digest": digest})
        assert r.status_code == 201, r.text
        got = b.get(f"/v2/crash/upload/blobs/{digest}")
        assert got.status_code == 200 and got.content == first + second
    assert cluster.keys("uploads/") == {}  # no part of the session left behind
    cluster.assert_fsck_clean()


def test_node_killed_mid_gc_loses_nothing(cluster: Cluster) -> None:
    pusher = cluster.start("pusher", SOKO_GC_INTERVAL="0")
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(50_000)
    garbage = [os.urandom(1000 + i) for i in range(40)]
    with _client(pusher) as client:
        push_blob(client, "keep/app", config)
        push_blob(client, "keep/app", layer)
        manifest = image_manifest(config, [layer])
        r = client.put("/v2/keep/app/manifests/v1", json=manifest,
                       headers={"Content-Type": manifest["mediaType"]})
        assert r.status_code == 201, r.text
        with ThreadPoolExecutor(8) as pool:  # blobs no manifest uses: garbage once the grace period is over
            doomed = list(pool.map(lambda data: push_blob(client, "scratch/junk", data), garbage))
    time.sleep(1.1)  # past the grace period below

    def deleted_some() -> bool:
        stored = cluster.keys("blobs/")
        return any(not any(key.endswith(digest[7:]) for key in stored) for digest in doomed)

    collector = cluster.start("collector", SOKO_GC_INTERVAL="1s", SOKO_GC_GRACE_PERIOD="1s")
    _until(deleted_some, "the collector deleted stored objects")
    collector.kill()  # while (or just after) executing the tombstones its committed batches left

    cluster.assert_fsck_clean()  # deletions committed but not carried out are not problems
    gc = cluster.soko("gc", "--grace-period", "1s")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    cluster.assert_fsck_clean()
    assert cluster.keys("trash/") == {}
    stored = cluster.keys("blobs/")
    assert not any(key.endswith(digest[7:]) for key in stored for digest in doomed)

    with _client(pusher) as client:  # its caches learnt of the collection through the database
        pulled = client.get("/v2/keep/app/manifests/v1", headers={"Accept": manifest["mediaType"]})
        assert pulled.status_code == 200 and pulled.json() == manifest
        for data in (config, layer):
            assert client.get(f"/v2/keep/app/blobs/{sha256(data)}").content == data
        for digest in doomed:
            assert client.head(f"/v2/scratch/junk/blobs/{digest}").status_code == 404
    assert {key.rsplit("/", 1)[-1] for key in cluster.keys("blobs/")} == {
        sha256(data).split(":")[1] for data in (config, layer)
    }


class Gateway:
    """A radosgw of the test's own on the shared cluster (a real S3 server that can be stopped without disturbing
    other tests), on a fixed port so that it comes back at the same address."""

    def __init__(self, s3: S3Server, workdir: Path) -> None:
        assert s3.directory is not None
        self.s3, self.workdir, self.port = s3, workdir, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        conf = self.s3.directory / "ceph.conf"
        self.proc = subprocess.Popen([
            "radosgw", "-f", "-c", str(conf), "-n", "client.rgw.s3",
            "--rgw-frontends", f"beast endpoint=127.0.0.1:{self.port}",
            "--pid-file", str(self.workdir / "gateway.pid"), "--admin-socket", str(self.workdir / "gateway.asok"),
            "--log-file", str(self.workdir / "gateway.log"),
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "the test's radosgw exited"
            try:
                httpx.get(self.endpoint, timeout=1)
                return True
            except httpx.TransportError:
                return False

        _until(answers, "the test's radosgw answers")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def test_s3_gateway_down_mid_push_is_a_retryable_503_and_nothing_half_visible(cluster: Cluster) -> None:
    gateway = Gateway(cluster.s3, cluster.workdir)
    gateway.start()
    try:
        storage = f"s3://{cluster.bucket}/{PREFIX}?endpoint_url={gateway.endpoint}&addressing_style=path"
        node = cluster.start("node", SOKO_STORAGE_URL=storage)
        first, second = os.urandom(3 << 20), os.urandom(2 << 20)
        digest = "sha256:" + hashlib.sha256(first + second).hexdigest()
        with _client(node) as client:
            location = client.post("/v2/outage/app/blobs/uploads/").headers["Location"]
            r = client.patch(location, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
            assert r.status_code == 202, r.text

            gateway.stop()
            chunk = client.patch(location, content=second,
                                 headers={"Content-Range": f"{len(first)}-{len(first + second) - 1}"})
            body = assert_oci_error(chunk, 503, "UNAVAILABLE")
            assert "S3" in body["errors"][0]["message"] and chunk.headers.get("Retry-After"), (body, chunk.headers)
            done = client.put(location, params={"digest": digest})
            assert_oci_error(done, 503, "UNAVAILABLE")
            assert client.head(f"/v2/outage/app/blobs/{digest}").status_code == 404  # nothing half visible

            gateway.start()
            status = client.get(location)
            assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}", status.text
            r = client.patch(location, content=second,
                             headers={"Content-Range": f"{len(first)}-{len(first + second) - 1}"})
            assert r.status_code == 202, r.text
            r = client.put(location, params={"digest": digest})
            assert r.status_code == 201, r.text
            assert client.get(f"/v2/outage/app/blobs/{digest}").content == first + second
        cluster.assert_fsck_clean()
    finally:
        gateway.stop()
