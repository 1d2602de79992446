"""Encryption at rest through a real client: a random layer skopeo pushes is nowhere in the data dir in plaintext,
and pulls back byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .images import build_image
from .layout import assert_same_content
from .servers import RegistryServer
from .skopeo import Skopeo

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]


def _stored_files(root: Path) -> list[Path]:
    return [Path(dirpath) / name for dirpath, _, names in os.walk(root) for name in names]


def test_a_pushed_layer_is_not_stored_in_plaintext(registry: RegistryServer, skopeo: Skopeo, tmp_path: Path) -> None:
    image = build_image(tmp_path / "layout", "v1", "encryption-at-rest", [3 << 20])
    dest = f"docker://{registry.host}/e2e/encrypted:v1"
    skopeo.copy(image.ref, dest)
    blobs = image.closure()
    manifest = json.loads(image.top_manifest())
    layer = blobs[manifest["layers"][0]["digest"]]
    probes = [layer[i : i + 32] for i in range(0, len(layer) - 32, len(layer) // 64)]
    files = _stored_files(registry.data_dir)
    assert any("sealed" in str(path) for path in files)
    for path in files:
        content = path.read_bytes()
        for probe in probes:
            assert probe not in content, f"plaintext of the pushed image in {path}"
    pulled = image.with_path(tmp_path / "pulled")
    skopeo.copy(dest, pulled.ref)
    assert_same_content(blobs, pulled.closure())
