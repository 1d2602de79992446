"""The archive storage class through real clients: skopeo pushes, the AWS CLI archives (pull refused, with ECR's
404 and a message that says how to restore), the content leaves standard storage, the AWS CLI restores (ACTIVATING,
then ACTIVE once the background job is done) and skopeo pulls the image back byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.rawhttp import wait_until

from .aws_cli import AwsCli, AwsCliError
from .images import build_image
from .layout import assert_same_content
from .servers import RegistryServer, soko_root_key
from .skopeo import Skopeo

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]
REPO = "e2e/archive"


def _bytes(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def test_archive_refuses_pulls_and_restore_brings_the_image_back(soko: RegistryServer, tmp_path: Path) -> None:
    skopeo = Skopeo.create(tmp_path / "skopeo-home")
    skopeo.add_registry(soko.host, soko.credentials)
    aws = AwsCli.for_key(soko.url, soko_root_key(soko.data_dir), tmp_path / "home")
    image = build_image(tmp_path / "layout", "v1", "archive-e2e", [4 << 20, 1 << 20])
    dest = f"docker://{soko.host}/{REPO}:v1"
    skopeo.copy(image.ref, dest)
    standard = soko.data_dir / "storage" / "sealed" / "blobs"
    archive = soko.data_dir / "storage" / "sealed" / "archive"  # the default: the same store, its own prefix
    before = _bytes(standard)

    out = aws.json("ecr", "update-image-storage-class", "--repository-name", REPO, "--image-id", "imageTag=v1",
                   "--target-storage-class", "ARCHIVE")  # fmt: skip
    assert out["imageStatus"] == "ARCHIVED" and out["imageId"]["imageTag"] == "v1"
    refused = skopeo.copy(dest, image.with_path(tmp_path / "refused").ref, check=False)
    assert refused.returncode != 0 and "manifest unknown" in refused.stderr.lower()
    got = aws.json("ecr", "batch-get-image", "--repository-name", REPO, "--image-ids", "imageTag=v1")
    assert got["images"] == [] and "update-image-storage-class" in got["failures"][0]["failureReason"]
    assert aws.json("ecr", "describe-images", "--repository-name", REPO)["imageDetails"] == []  # default: ACTIVE
    (detail,) = aws.json("ecr", "describe-images", "--repository-name", REPO, "--filter",
                         "imageStatus=ARCHIVED")["imageDetails"]  # fmt: skip
    assert detail["imageStatus"] == "ARCHIVED" and "lastArchivedAt" in detail
    layers = [d["digest"] for d in json.loads(image.top_manifest())["layers"]]
    wait_until(lambda: _bytes(standard) <= before - (5 << 20), "the content to leave standard storage", timeout=60)
    availability = aws.json("ecr", "batch-check-layer-availability", "--repository-name", REPO,
                            "--layer-digests", *layers)["layers"]  # fmt: skip
    assert {layer["layerAvailability"] for layer in availability} == {"ARCHIVED"}, availability
    archived_standard, archived_archive = _bytes(standard), _bytes(archive)
    print(f"standard storage {before} -> {archived_standard} bytes; archive prefix {archived_archive} bytes")

    out = aws.json("ecr", "update-image-storage-class", "--repository-name", REPO, "--image-id", "imageTag=v1",
                   "--target-storage-class", "STANDARD")  # fmt: skip
    assert out["imageStatus"] in ("ACTIVATING", "ACTIVE")
    wait_until(
        lambda: aws.json("ecr", "describe-images", "--repository-name", REPO)["imageDetails"],
        "the restore to end ACTIVE",
        timeout=60,
    )
    (detail,) = aws.json("ecr", "describe-images", "--repository-name", REPO)["imageDetails"]
    assert detail["imageStatus"] == "ACTIVE" and "lastActivatedAt" in detail
    pulled = image.with_path(tmp_path / "pulled")
    skopeo.copy(dest, pulled.ref)
    assert_same_content(image.closure(), pulled.closure())


def test_hostile_storage_class_requests(soko: RegistryServer, tmp_path: Path) -> None:
    aws = AwsCli.for_key(soko.url, soko_root_key(soko.data_dir), tmp_path / "home")
    aws.json("ecr", "create-repository", "--repository-name", "e2e/archive-hostile")
    cases = [
        (["--image-id", "imageTag=nope", "--target-storage-class", "ARCHIVE"], "ImageNotFoundException"),
        (["--image-id", "imageDigest=sha256:zz", "--target-storage-class", "ARCHIVE"], "InvalidParameterException"),
        (["--image-id", "imageTag=v1", "--target-storage-class", "GLACIER"], "InvalidParameterException"),
        (["--image-id", "imageTag=" + "a" * 400, "--target-storage-class", "ARCHIVE"], "InvalidParameterException"),
    ]
    for args, code in cases:
        with pytest.raises(AwsCliError) as exc:
            aws.json("ecr", "update-image-storage-class", "--repository-name", "e2e/archive-hostile", *args)
        assert code in exc.value.result.stderr, (args, exc.value.result.stderr)
    with pytest.raises(AwsCliError) as exc:
        aws.json("ecr", "update-image-storage-class", "--repository-name", "e2e/missing", "--image-id",
                 "imageTag=v1", "--target-storage-class", "ARCHIVE")  # fmt: skip
    assert "RepositoryNotFoundException" in exc.value.result.stderr
