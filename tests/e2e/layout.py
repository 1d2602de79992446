"""Read images stored as an OCI image layout (``oci:DIR:TAG``) or with skopeo's ``dir:`` transport."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.oci.helpers import sha256

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


def media_type(manifest: bytes) -> str:
    doc = json.loads(manifest)
    if "mediaType" in doc:
        return str(doc["mediaType"])
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


@dataclass(frozen=True)
class ImageRef:
    """An image on disk: ``transport`` is ``oci`` (layout + tag) or ``dir``."""

    transport: str
    path: Path
    tag: str | None = None

    @property
    def ref(self) -> str:
        return f"oci:{self.path}:{self.tag}" if self.transport == "oci" else f"dir:{self.path}"

    def with_path(self, path: Path) -> ImageRef:
        return ImageRef(self.transport, path, self.tag)

    # -- reading -------------------------------------------------------------------------------------------
    def top_manifest(self) -> bytes:
        if self.transport == "dir":
            return (self.path / "manifest.json").read_bytes()
        index = json.loads((self.path / "index.json").read_text())
        for desc in index["manifests"]:
            if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == self.tag:
                return self.blob(desc["digest"])
        raise KeyError(f"tag {self.tag!r} not in {self.path}/index.json")

    def top_digest(self) -> str:
        return sha256(self.top_manifest())

    def blob(self, digest: str) -> bytes:
        algorithm, hexpart = digest.split(":", 1)
        if self.transport == "dir":
            candidates = [self.path / hexpart, self.path / f"{hexpart}.manifest.json"]
        else:
            candidates = [self.path / "blobs" / algorithm / hexpart]
        for path in candidates:
            if path.exists():
                return path.read_bytes()
        raise FileNotFoundError(f"{digest} not in {self.path}")

    def closure(self) -> dict[str, bytes]:
        """Every blob reachable from the tag (manifests, configs, layers), digest -> bytes."""
        blobs: dict[str, bytes] = {}
        top = self.top_manifest()
        self._walk(sha256(top), top, blobs)
        return blobs

    def _walk(self, digest: str, manifest: bytes, blobs: dict[str, bytes]) -> None:
        blobs[digest] = manifest
        doc = json.loads(manifest)
        if media_type(manifest) in INDEX_TYPES:
            for child in doc["manifests"]:
                data = self.blob(child["digest"]) if self.transport == "oci" else self._dir_child(child)
                self._walk(child["digest"], data, blobs)
            return
        for desc in [doc["config"], *doc.get("layers", [])]:
            blobs[desc["digest"]] = self.blob(desc["digest"])

    def _dir_child(self, desc: dict[str, str]) -> bytes:
        return (self.path / f"{desc['digest'].split(':', 1)[1]}.manifest.json").read_bytes()

    def layers(self) -> list[dict[str, object]]:
        return list(json.loads(self.top_manifest()).get("layers", []))


def assert_same_content(expected: dict[str, bytes], actual: dict[str, bytes]) -> None:
    """Byte-identical: same digests, same bytes, and every digest matches its bytes."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, f"blob sets differ: missing={missing} extra={extra}"
    for digest, data in expected.items():
        assert sha256(data) == digest, f"source blob {digest} does not match its digest"
        assert actual[digest] == data, f"blob {digest} differs after the round trip"
