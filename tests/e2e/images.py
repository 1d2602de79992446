"""Real test images built with umoci (and skopeo for format conversions) from deterministic random content.

Every builder writes into ``workdir`` and returns :class:`ImageRef`\\ s; ``build_all`` makes the set the
end-to-end tests push. Content is derived from a seed, so a given seed always gives the same files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

from tests.oci.helpers import sha256

from .layout import OCI_INDEX, OCI_MANIFEST, ImageRef
from .skopeo import Skopeo

CREATED = "2024-01-01T00:00:00Z"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
ARTIFACT_TYPE = "application/vnd.soko.test.sbom"
ARTIFACT_LAYER_TYPE = "application/vnd.soko.test.sbom.v1+json"


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True, timeout=300)


def random_bytes(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (1_700_000_000, 1_700_000_000))


def new_image(layout: Path, tag: str, *, arch: str = "amd64") -> None:
    if not (layout / "index.json").exists():
        umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{tag}")
    umoci("config", "--image", f"{layout}:{tag}", "--architecture", arch, "--os", "linux",
          "--created", CREATED, "--history.created", CREATED, "--config.cmd", "/bin/true")


def add_layer(layout: Path, tag: str, staging: Path, files: dict[str, bytes]) -> None:
    """One ``umoci insert`` = one new layer holding ``files`` (paths relative to the image root)."""
    if staging.exists():
        shutil.rmtree(staging)
    for name, data in files.items():
        _write_file(staging / name, data)
    umoci("insert", "--image", f"{layout}:{tag}", "--history.created", CREATED,
          "--history.created_by", f"layer {len(files)} files", str(staging), "/")


def build_image(layout: Path, tag: str, seed: str, layer_sizes: list[int], *, arch: str = "amd64") -> ImageRef:
    new_image(layout, tag, arch=arch)
    staging = layout.parent / f".staging-{tag}"
    for index, size in enumerate(layer_sizes):
        files = {
            f"data/{tag}/layer{index}.bin": random_bytes(f"{seed}/{index}", size),
            f"etc/{tag}-{index}.txt": f"{seed} layer {index} {arch}\n".encode(),
        }
        add_layer(layout, tag, staging, files)
    shutil.rmtree(staging, ignore_errors=True)
    return ImageRef("oci", layout, tag)


def _put_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    if not path.exists():
        path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _tag_in_layout(layout: Path, media_type: str, desc: dict[str, object], tag: str,
                   extra: dict[str, object] | None = None) -> None:
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"] = [
        d for d in index.get("manifests") or []
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ]
    entry = {"mediaType": media_type, **desc, **(extra or {}),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
    index["manifests"].append(entry)
    index_path.write_text(json.dumps(index))


def build_multiarch(layout: Path, tag: str, seed: str) -> ImageRef:
    """Two single-arch images (amd64, arm64) and an OCI index over them, tagged ``tag``."""
    children = []
    for arch in ("amd64", "arm64"):
        image = build_image(layout, f"{tag}-{arch}", f"{seed}/{arch}", [300_000, 200_000], arch=arch)
        manifest = image.top_manifest()
        children.append({"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
                         "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}, indent=2).encode()
    _tag_in_layout(layout, OCI_INDEX, _put_blob(layout, index), tag)
    return ImageRef("oci", layout, tag)


def build_artifact(layout: Path, tag: str, subject: ImageRef) -> ImageRef:
    """An OCI artifact (``artifactType``, empty config) whose ``subject`` is ``subject``'s manifest."""
    if not (layout / "index.json").exists():
        umoci("init", "--layout", str(layout))
    empty = _put_blob(layout, b"{}")
    payload = json.dumps({"sbom": "deterministic", "subject": subject.top_digest()}).encode()
    layer = _put_blob(layout, payload)
    subject_manifest = subject.top_manifest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_CONFIG_TYPE, **empty, "data": "e30="},
        "layers": [{"mediaType": ARTIFACT_LAYER_TYPE, **layer}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(subject_manifest),
                    "size": len(subject_manifest)},
        "annotations": {"org.opencontainers.image.created": CREATED},
    }, indent=2).encode()
    _tag_in_layout(layout, OCI_MANIFEST, _put_blob(layout, manifest), tag, {"artifactType": ARTIFACT_TYPE})
    return ImageRef("oci", layout, tag)


def build_all(workdir: Path, skopeo: Skopeo) -> dict[str, ImageRef]:
    """The end-to-end image set, keyed by name."""
    layout = workdir / "oci"
    images: dict[str, ImageRef] = {
        "single": build_image(layout, "single", "single", [2 * 1024 * 1024]),
        "many-layers": build_image(layout, "many-layers", "many", [64 * 1024 + 37 * i for i in range(12)]),
        "multiarch": build_multiarch(layout, "multiarch", "multi"),
    }
    v2s2 = ImageRef("dir", workdir / "docker-v2s2")
    skopeo.copy(images["single"].ref, v2s2.ref, "--format", "v2s2")
    images["docker-v2s2"] = v2s2
    zstd = ImageRef("oci", workdir / "oci-zstd", "zstd")
    skopeo.copy(images["single"].ref, zstd.ref, "--dest-compress-format", "zstd")
    images["zstd"] = zstd
    images["artifact"] = build_artifact(workdir / "oci-artifact", "sbom", images["single"])
    return images
