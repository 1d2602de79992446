"""Encryption at rest through a real client: a random layer skopeo pushes is nowhere in the data dir in plaintext,
and pulls back byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.s3 import S3Server, moto  # noqa: F401 - fixture

from .aws_cli import AwsCli
from .images import build_image
from .layout import assert_same_content
from .servers import RegistryServer, soko_root_key, start_soko
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
    # The push left the layer's plaintext in the node's memory cache (tmpfs, outside the data dir), which the pull
    # is served from: byte for byte, and still nothing in plaintext under the data dir after it.
    digest = manifest["layers"][0]["digest"]
    cached = list(Path(f"/dev/shm/soko-{os.getuid()}").glob(f"*/aes256/{digest.replace(':', '-')}"))
    assert cached and cached[0].read_bytes() == layer
    pulled = image.with_path(tmp_path / "pulled")
    skopeo.copy(dest, pulled.ref)
    assert_same_content(blobs, pulled.closure())
    for path in _stored_files(registry.data_dir):
        content = path.read_bytes()
        assert not any(probe in content for probe in probes), f"plaintext of the pulled image in {path}"


def test_nothing_in_plaintext_in_the_bucket_either(moto: S3Server, tmp_path: Path) -> None:  # noqa: F811
    """The same probe on the S3 driver (moto): every object of the bucket and every file of the data dir, for a
    layer pushed into an AES256 repository and one pushed into a KMS repository."""
    if not Skopeo.available():
        pytest.skip("skopeo is not installed")
    bucket = moto.new_bucket("sealed")
    server = start_soko(tmp_path / "data", env={"SOKO_STORAGE_URL": moto.storage_url(bucket), **moto.env})
    try:
        skopeo = Skopeo.create(tmp_path / "skopeo", {server.host: server.credentials})
        aws = AwsCli.for_key(server.url, soko_root_key(server.data_dir), tmp_path / "aws")
        key_id = aws.json("kms", "create-key")["KeyMetadata"]["KeyId"]
        aws.run("ecr", "create-repository", "--repository-name", "s3/kms",
                "--encryption-configuration", f"encryptionType=KMS,kmsKey={key_id}")
        layers = []
        for repo in ("s3/plain", "s3/kms"):
            image = build_image(tmp_path / f"layout-{repo.replace('/', '-')}", "v1", f"bucket-{repo}", [1 << 20])
            skopeo.copy(image.ref, f"docker://{server.host}/{repo}:v1")
            manifest = json.loads(image.top_manifest())
            layers.append(image.closure()[manifest["layers"][0]["digest"]])
            pulled = image.with_path(tmp_path / f"pulled-{repo.replace('/', '-')}")
            skopeo.copy(f"docker://{server.host}/{repo}:v1", pulled.ref)
            assert_same_content(image.closure(), pulled.closure())
        probes = [layer[i : i + 32] for layer in layers for i in range(0, len(layer) - 32, len(layer) // 64)]
        client = moto.shared_client
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])]
        assert any("/sealed/keyed/kms/" in k for k in keys) and any("/sealed/blobs/" in k for k in keys), keys
        for key in keys:
            content = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert not any(probe in content for probe in probes), f"plaintext of a pushed layer in s3://{bucket}/{key}"
        for path in _stored_files(server.data_dir):
            content = path.read_bytes()
            assert not any(probe in content for probe in probes), f"plaintext of a pushed layer in {path}"
    finally:
        assert server.stop() == 0
