"""containerd pulls from and pushes to Soko the way Kubernetes and ECS nodes do: ``ctr images pull/push
--plain-http --user AWS:<token>`` against a daemon the test starts (tests/e2e/containerd.py)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.oci.helpers import OCI_MANIFEST, image_manifest, push_blob, put_manifest, sha256

from .conftest import _require
from .containerd import Containerd, ContainerdError, go_arch
from .servers import RegistryServer

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]

CONTENT = b"pulled by containerd\n"


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    _require("containerd", "ctr")  # skips on a developer's machine without them, fails in CI
    with tempfile.TemporaryDirectory(prefix="soko-ctd-", dir="/tmp") as home:
        daemon = Containerd.start(Path(home))
        try:
            yield daemon
        finally:
            daemon.stop()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def push_runnable_image(http: httpx.Client, repo: str, tag: str) -> tuple[str, str]:
    """An image containerd can unpack (gzip layer, config with its diff id, this machine's platform).
    Returns (manifest digest, layer digest)."""
    tar = layer_tar({"hello.txt": CONTENT})
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({"architecture": go_arch(), "os": "linux", "config": {"Cmd": ["/hello"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}}).encode()
    push_blob(http, repo, config)
    layer_digest = push_blob(http, repo, layer)
    payload = json.dumps(image_manifest(config, [layer])).encode()
    response = put_manifest(http, repo, tag, payload, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    return sha256(payload), layer_digest


def user(registry: RegistryServer) -> list[str]:
    return ["--user", ":".join(registry.credentials)] if registry.credentials else []


def test_ctr_pull_unpacks_and_push_uploads(containerd: Containerd, registry: RegistryServer,
                                           http: httpx.Client) -> None:
    digest, layer_digest = push_runnable_image(http, "clients/containerd", "v1")
    v1 = f"{registry.host}/clients/containerd:v1"
    containerd.ctr("images", "pull", "--plain-http", *user(registry), "--snapshotter", "native", v1)
    listed = containerd.ctr("images", "ls", "--quiet")
    assert v1 in listed.split()
    assert digest in containerd.ctr("images", "ls")
    assert containerd.ctr_bytes("content", "get", layer_digest) == http.get(
        f"/v2/clients/containerd/blobs/{layer_digest}").content
    assert [path.read_bytes() for path in containerd.unpacked_files("hello.txt")] == [CONTENT]

    pushed = f"{registry.host}/clients/containerd-push:v2"
    containerd.ctr("images", "tag", v1, pushed)
    containerd.ctr("images", "push", "--plain-http", *user(registry), pushed)
    response = http.get("/v2/clients/containerd-push/manifests/v2", headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200, response.text
    assert sha256(response.content) == digest
    assert http.head(f"/v2/clients/containerd-push/blobs/{layer_digest}").status_code == 200


def test_ctr_pull_with_a_wrong_token_is_refused(containerd: Containerd, registry: RegistryServer,
                                                http: httpx.Client) -> None:
    if registry.credentials is None:
        pytest.skip("the registry under test asks for no credentials")
    push_runnable_image(http, "clients/containerd-denied", "v1")
    with pytest.raises(ContainerdError, match=r"401|nauthorized"):
        containerd.ctr("images", "pull", "--plain-http", "--user", "AWS:not-a-token", "--snapshotter", "native",
                       f"{registry.host}/clients/containerd-denied:v1")
