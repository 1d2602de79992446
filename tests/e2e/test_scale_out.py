"""Two stateless `soko serve` nodes on one PostgreSQL database and one S3 bucket, as behind a load balancer:
an image pushed through one node is pulled byte for byte through the other, and one chunked upload is started on
one node and finished on the other."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import fresh_database
from tests.oci.helpers import sha256
from tests.s3 import S3Server, rgw  # noqa: F401 - fixture

from .layout import assert_same_content
from .servers import RegistryServer, start_soko
from .skopeo import Skopeo
from .test_skopeo_roundtrip import docker_ref, pull, push

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]

ROOT = ("AKIASCALEOUTROOT0001", "scale-out-root-secret-000000000000000000")


@pytest.fixture(scope="module")
def nodes(rgw: S3Server, tmp_path_factory) -> Iterator[tuple[RegistryServer, RegistryServer]]:  # noqa: F811
    bucket = rgw.new_bucket("soko-nodes")
    workdir = tmp_path_factory.mktemp("scale-out")
    with fresh_database("postgresql", str(workdir)) as database_url:
        env = {
            "SOKO_DATABASE_URL": database_url,
            "SOKO_STORAGE_URL": rgw.storage_url(bucket),
            **rgw.env,  # the bucket's credentials, through the standard AWS chain
            "SOKO_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),  # shared by every node
            "SOKO_ROOT_ACCESS_KEY_ID": ROOT[0],
            "SOKO_ROOT_SECRET_ACCESS_KEY": ROOT[1],
        }
        started: list[RegistryServer] = []
        try:
            # Each node has a data dir of its own (nothing shared on disk). (No presigned redirects: blobs are
            # encrypted at rest and stream through Soko, which decrypts them.)
            started.append(start_soko(workdir / "node-a", env=env))
            started.append(start_soko(workdir / "node-b", env=env))
            yield started[0], started[1]
        finally:
            for server in started:
                server.stop()


def test_image_pushed_through_one_node_pulls_through_the_other(nodes, images, tmp_path: Path) -> None:
    """Pushed through node A, pulled through node B (which decrypts what node A encrypted: a shared master key)."""
    node_a, node_b = nodes
    image = images["many-layers"]
    skopeo = Skopeo.create(tmp_path / "skopeo-home")
    for node in nodes:
        skopeo.add_registry(node.host, node.credentials)
    push(skopeo, image, docker_ref(node_a, "scale/app"))
    pulled = pull(skopeo, docker_ref(node_b, "scale/app"), image, tmp_path / "pulled")
    assert pulled.top_manifest() == image.top_manifest()
    assert_same_content(image.closure(), pulled.closure())
    for node in nodes:  # blobs live in the bucket only, never on a node's disk
        assert not (node.data_dir / "storage").exists()


def test_one_upload_continues_on_another_node(nodes) -> None:
    node_a, node_b = nodes
    first, second = os.urandom(9 << 20), os.urandom(3 << 20)  # the first chunk spans a full 8 MiB part
    digest = sha256(first + second)
    with httpx.Client(headers=node_a.auth_header(), timeout=60) as a, httpx.Client(
        headers=node_b.auth_header(), timeout=60
    ) as b:
        started = a.post(f"{node_a.url}/v2/scale/chunks/blobs/uploads/")
        assert started.status_code == 202, started.text
        path = started.headers["Location"]
        path = path if path.startswith("/") else httpx.URL(path).raw_path.decode()
        r = a.patch(f"{node_a.url}{path}", content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202, r.text
        status = b.get(f"{node_b.url}{path}")  # the other node sees the same session and offset
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}"
        r = b.patch(
            f"{node_b.url}{path}", content=second, headers={"Content-Range": f"{len(first)}-{len(first + second) - 1}"}
        )
        assert r.status_code == 202, r.text
        r = b.put(f"{node_b.url}{path}", params={"digest": digest})
        assert r.status_code == 201, r.text
        got = a.get(f"{node_a.url}/v2/scale/chunks/blobs/{digest}")
        assert got.status_code == 200 and got.content == first + second
        other = b.get(f"{node_b.url}/v2/scale/chunks/blobs/{digest}")
        assert other.status_code == 200 and other.content == first + second


def test_readiness_names_an_unreachable_bucket(rgw: S3Server, tmp_path: Path) -> None:  # noqa: F811
    env = {
        "SOKO_STORAGE_URL": rgw.storage_url(f"no-such-bucket-{uuid.uuid4().hex[:8]}"),
        **rgw.env,
        "SOKO_ROOT_ACCESS_KEY_ID": ROOT[0],
        "SOKO_ROOT_SECRET_ACCESS_KEY": ROOT[1],
    }
    server = start_soko(tmp_path / "data", env=env)
    try:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503 and "no-such-bucket" in ready.text, ready.text
    finally:
        server.stop()
