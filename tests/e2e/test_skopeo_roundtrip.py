"""skopeo pushes real umoci-built images to the registry and pulls them back byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.oci.helpers import sha256

from .images import ARTIFACT_TYPE
from .layout import DOCKER_MANIFEST, INDEX_TYPES, OCI_INDEX, ImageRef, assert_same_content
from .servers import E2E_TARGET, RegistryServer
from .skopeo import Skopeo, SkopeoError

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]

ROUND_TRIP = ["single", "many-layers", "multiarch", "docker-v2s2", "zstd"]
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def docker_ref(registry: RegistryServer, repo: str, tag_or_digest: str = "v1") -> str:
    separator = "@" if tag_or_digest.startswith("sha256:") else ":"
    return f"docker://{registry.host}/{repo}{separator}{tag_or_digest}"


def push(skopeo: Skopeo, image: ImageRef, dest: str, **kwargs: bool) -> str:
    """Push ``image`` and return the stderr of skopeo (debug output if asked)."""
    is_index = json.loads(image.top_manifest()).get("mediaType") in INDEX_TYPES
    return skopeo.copy(image.ref, dest, all_images=is_index, **kwargs).stderr


def pull(skopeo: Skopeo, source: str, like: ImageRef, out: Path) -> ImageRef:
    """Pull into a fresh layout of the same kind as ``like`` (OCI layout or ``dir:``)."""
    target = like.with_path(out)
    is_index = json.loads(like.top_manifest()).get("mediaType") in INDEX_TYPES
    skopeo.copy(source, target.ref, all_images=is_index)
    return target


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_is_byte_identical(name: str, registry: RegistryServer, skopeo: Skopeo,
                                      images: dict[str, ImageRef], tmp_path: Path) -> None:
    image = images[name]
    dest = docker_ref(registry, f"e2e/roundtrip-{name}")
    push(skopeo, image, dest)

    assert skopeo.inspect_raw(dest) == image.top_manifest()
    by_digest = docker_ref(registry, f"e2e/roundtrip-{name}", image.top_digest())
    assert skopeo.inspect_raw(by_digest) == image.top_manifest()

    pulled = pull(skopeo, dest, image, tmp_path / "pulled")
    assert pulled.top_manifest() == image.top_manifest()
    assert_same_content(image.closure(), pulled.closure())


def test_multiarch_children_are_addressable(registry: RegistryServer, skopeo: Skopeo,
                                            images: dict[str, ImageRef]) -> None:
    image = images["multiarch"]
    repo = "e2e/multiarch-children"
    push(skopeo, image, docker_ref(registry, repo))
    index = json.loads(image.top_manifest())
    assert index["mediaType"] == OCI_INDEX
    archs = set()
    for child in index["manifests"]:
        raw = skopeo.inspect_raw(docker_ref(registry, repo, child["digest"]))
        assert sha256(raw) == child["digest"]
        archs.add(json.loads(skopeo.inspect(docker_ref(registry, repo, child["digest"]),
                                            "--config").stdout)["architecture"])
    assert archs == {"amd64", "arm64"}


def test_docker_v2s2_media_types_preserved(registry: RegistryServer, skopeo: Skopeo,
                                           images: dict[str, ImageRef], http: httpx.Client) -> None:
    image = images["docker-v2s2"]
    repo = "e2e/docker-v2s2"
    push(skopeo, image, docker_ref(registry, repo))
    manifest = json.loads(image.top_manifest())
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    response = http.get(f"/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == DOCKER_MANIFEST
    assert response.headers["docker-content-digest"] == image.top_digest()
    assert response.content == image.top_manifest()


def test_zstd_layers_preserved(registry: RegistryServer, skopeo: Skopeo,
                               images: dict[str, ImageRef], http: httpx.Client) -> None:
    image = images["zstd"]
    repo = "e2e/zstd"
    push(skopeo, image, docker_ref(registry, repo))
    layers = json.loads(skopeo.inspect_raw(docker_ref(registry, repo)))["layers"]
    assert [layer["mediaType"] for layer in layers] == ["application/vnd.oci.image.layer.v1.tar+zstd"]
    blob = http.get(f"/v2/{repo}/blobs/{layers[0]['digest']}")
    assert blob.status_code == 200
    assert blob.content.startswith(ZSTD_MAGIC)
    assert sha256(blob.content) == layers[0]["digest"]


def _digests(pattern: str, log: str) -> set[str]:
    return {m.replace("%3A", ":") for m in re.findall(pattern, log)}


def test_copy_between_repositories_mounts(registry: RegistryServer, skopeo: Skopeo,
                                          images: dict[str, ImageRef]) -> None:
    """Robust signal from ``skopeo --debug``: every layer gets a ``POST ?mount=`` and no upload ``PUT ?digest=``.

    skopeo copies layers in parallel, so its log lines interleave; each finished upload ends with a
    ``PUT .../blobs/uploads/...&digest=D`` line, each mount attempt is a ``POST ...?from=...&mount=D``.
    """
    image = images["many-layers"]
    source, target = docker_ref(registry, "e2e/mount-src"), docker_ref(registry, "e2e/mount-dst")
    push(skopeo, image, source)

    log = skopeo.copy(source, target, debug=True).stderr
    layers = {str(layer["digest"]) for layer in image.layers()}
    assert len(layers) == 12
    tried = _digests(r'msg="POST \S+/blobs/uploads/\?\S*mount=(sha256%3A[0-9a-f]{64})', log)
    uploaded = _digests(r'msg="PUT \S+/blobs/uploads/\S*[?&]digest=(sha256%3A[0-9a-f]{64})', log)
    tail = log[-3000:]
    assert layers <= tried, f"no mount attempted for {sorted(layers - tried)}\n{tail}"
    assert not layers & uploaded, f"layers uploaded instead of mounted: {sorted(layers & uploaded)}\n{tail}"
    assert log.count("mount OK") >= len(layers), tail
    assert skopeo.inspect_raw(target) == image.top_manifest()


def test_list_tags(registry: RegistryServer, skopeo: Skopeo, images: dict[str, ImageRef]) -> None:
    repo = "e2e/tags"
    for tag in ("v1", "v2", "latest"):
        push(skopeo, images["single"], docker_ref(registry, repo, tag))
    assert sorted(skopeo.list_tags(f"docker://{registry.host}/{repo}")) == ["latest", "v1", "v2"]


def test_delete_by_digest_then_pull_fails(registry: RegistryServer, skopeo: Skopeo,
                                          images: dict[str, ImageRef], tmp_path: Path) -> None:
    image = images["single"]
    repo = "e2e/delete"
    push(skopeo, image, docker_ref(registry, repo))
    skopeo.delete(docker_ref(registry, repo, image.top_digest()))

    for ref in (docker_ref(registry, repo), docker_ref(registry, repo, image.top_digest())):
        assert skopeo.inspect(ref, "--raw", check=False).returncode != 0
    result = skopeo.copy(docker_ref(registry, repo), image.with_path(tmp_path / "gone").ref, check=False)
    assert result.returncode != 0


def test_artifact_with_subject(registry: RegistryServer, skopeo: Skopeo, images: dict[str, ImageRef],
                               http: httpx.Client, tmp_path: Path) -> None:
    subject, artifact = images["single"], images["artifact"]
    repo = "e2e/artifact"
    push(skopeo, subject, docker_ref(registry, repo))
    try:
        push(skopeo, artifact, docker_ref(registry, repo, "sbom"))
    except SkopeoError as exc:  # pragma: no cover - depends on the skopeo build
        pytest.skip(f"this skopeo cannot push an OCI artifact; the protocol tests cover referrers: {exc}")
    assert skopeo.inspect_raw(docker_ref(registry, repo, "sbom")) == artifact.top_manifest()
    pulled = pull(skopeo, docker_ref(registry, repo, "sbom"), artifact, tmp_path / "pulled")
    assert_same_content(artifact.closure(), pulled.closure())

    if E2E_TARGET == "distribution":
        return  # Distribution 2.8.2 predates the referrers API
    response = http.get(f"/v2/{repo}/referrers/{subject.top_digest()}")
    assert response.status_code == 200
    descriptors = response.json()["manifests"]
    assert [(d["digest"], d.get("artifactType")) for d in descriptors] == [
        (artifact.top_digest(), ARTIFACT_TYPE)
    ]
