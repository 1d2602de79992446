"""podman and buildah (Debian's packages, rootful) push to and pull from Soko over plain HTTP.

buildah builds an image from scratch with one file and pushes it; podman pulls it into a store of its own, reads
the file back from the mounted image, and pushes it under another tag; buildah pulls that into a third store.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.oci.helpers import sha256

from .conftest import _require
from .podman import ContainerTool
from .servers import RegistryServer

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="soko-pod-", dir="/tmp") as path:
        yield Path(path)


def tool(binary: str, home: Path, runroot: Path, registry: RegistryServer) -> ContainerTool:
    _require(binary)  # skips on a developer's machine without it, fails in CI
    runner = ContainerTool.create(binary, home, runroot)
    if registry.credentials is not None:
        runner.login(registry.host, *registry.credentials)
    return runner


def manifest(http: httpx.Client, repo: str, ref: str) -> bytes:
    response = http.get(f"/v2/{repo}/manifests/{ref}",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                           "application/vnd.docker.distribution.manifest.v2+json"})
    assert response.status_code == 200, response.text
    return response.content


def test_buildah_push_podman_pull_and_push_buildah_pull(registry: RegistryServer, http: httpx.Client,
                                                         tmp_path: Path, short_dir: Path) -> None:
    buildah = tool("buildah", tmp_path / "buildah", short_dir / "b", registry)
    content = b"pushed by buildah, pulled by podman\n"
    (tmp_path / "hello.txt").write_bytes(content)
    container = buildah.run("from", "scratch")
    buildah.run("copy", container, str(tmp_path / "hello.txt"), "/hello.txt")
    buildah.run("config", "--cmd", "/hello", container)
    image_id = buildah.run("commit", "--signature-policy", buildah.policy, container, "localhost/hello:v1")
    v1 = f"{registry.host}/clients/podman:v1"
    buildah.run("push", "--signature-policy", buildah.policy, "--tls-verify=false", "localhost/hello:v1",
                f"docker://{v1}")
    pushed = json.loads(manifest(http, "clients/podman", "v1"))
    assert pushed["config"]["digest"] == f"sha256:{image_id}"

    podman = tool("podman", tmp_path / "podman", short_dir / "p", registry)
    podman.run("pull", "--tls-verify=false", v1)
    assert podman.run("image", "inspect", "--format", "{{.Id}}", v1) == image_id
    rootfs = Path(podman.run("image", "mount", v1))
    assert (rootfs / "hello.txt").read_bytes() == content
    podman.run("image", "unmount", v1)

    v2 = f"{registry.host}/clients/podman:v2"
    podman.run("tag", v1, v2)
    podman.run("push", "--tls-verify=false", v2)
    assert json.loads(manifest(http, "clients/podman", "v2"))["config"] == pushed["config"]

    puller = tool("buildah", tmp_path / "buildah-pull", short_dir / "c", registry)
    puller.run("pull", "--signature-policy", puller.policy, "--tls-verify=false", v2)
    assert puller.run("inspect", "--type", "image", "--format", "{{.FromImageID}}", v2) == image_id
    digest = sha256(manifest(http, "clients/podman", "v2"))
    assert puller.run("inspect", "--type", "image", "--format", "{{.FromImageDigest}}", v2) == digest
