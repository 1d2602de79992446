"""The archive storage class through boto3: UpdateImageStorageClass, the imageStatus filters and fields, what archived
images and layers answer on every read path, referrers following their subject, the strict lifecycle setting, and
hostile requests. (Real clients end to end: tests/e2e/test_archive.py; tiers, GC, fsck, metering:
tests/registry/test_archive.py.)"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from soko.registry.models import RepoRef
from tests.domain import push_image
from tests.ecr.test_images import error_of, raw_json
from tests.oci.helpers import sha256

ACCOUNT = "000000000000"


@pytest.fixture
def ecr(aws):
    return aws("ecr")


def _signature(server, ref: RepoRef, subject: str, size: int) -> str:
    empty = b"{}"
    config = server.registry.uploads.start(ref)
    writer = server.registry.uploads.begin_chunk(ref, config.id, 0)
    writer.write(empty)
    writer.finish()
    server.registry.uploads.complete(ref, config.id, sha256(empty))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": size},
    }).encode()  # fmt: skip
    return server.registry.manifests.put(ref, sha256(manifest), manifest, None).digest


def test_archived_image_on_every_read_path_then_restored(ecr, server) -> None:
    ref = RepoRef(ACCOUNT, "arch/api")
    digest = push_image(server.registry, ref, "v1", [b"layer one" * 1000])
    size = len(server.registry.manifests.get(ref, digest).payload)
    signature = _signature(server, ref, digest, size)
    layer = json.loads(server.registry.manifests.get(ref, digest).payload)["layers"][0]["digest"]

    out = ecr.update_image_storage_class(repositoryName="arch/api", imageId={"imageTag": "v1"},
                                         targetStorageClass="ARCHIVE")  # fmt: skip
    assert out["imageStatus"] == "ARCHIVED" and out["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    for manifest_id in (server.registry.manifests.get(ref, d).id for d in (digest, signature)):
        server.registry.storage_classes.run_job(str(manifest_id))  # what the storage_class job does

    assert ecr.list_images(repositoryName="arch/api")["imageIds"] == []
    archived = ecr.list_images(repositoryName="arch/api", filter={"imageStatus": "ARCHIVED"})["imageIds"]
    assert {i["imageDigest"] for i in archived} == {digest, signature}  # the signature followed its subject
    (detail,) = ecr.describe_images(repositoryName="arch/api", imageIds=[{"imageTag": "v1"}])["imageDetails"]
    assert detail["imageStatus"] == "ARCHIVED" and "lastArchivedAt" in detail and "lastActivatedAt" not in detail
    got = ecr.batch_get_image(repositoryName="arch/api", imageIds=[{"imageTag": "v1"}])
    assert got["images"] == [] and got["failures"][0]["failureCode"] == "ImageNotFound"
    assert "--target-storage-class STANDARD" in got["failures"][0]["failureReason"]
    (availability,) = ecr.batch_check_layer_availability(repositoryName="arch/api", layerDigests=[layer])["layers"]
    assert availability["layerAvailability"] == "ARCHIVED"
    with pytest.raises(ClientError) as exc:
        ecr.get_download_url_for_layer(repositoryName="arch/api", layerDigest=layer)
    assert error_of(exc)[0] == "LayerInaccessibleException"
    with pytest.raises(ClientError) as exc:
        ecr.start_image_scan(repositoryName="arch/api", imageId={"imageDigest": digest})
    assert error_of(exc)[0] == "ImageArchivedException"
    referrers = ecr.list_image_referrers(repositoryName="arch/api", subjectId={"imageDigest": digest},
                                         filter={"artifactStatus": "ARCHIVED"})["referrers"]  # fmt: skip
    assert [(r["digest"], r["artifactStatus"]) for r in referrers] == [(signature, "ARCHIVED")]
    http = server.url + "/v2/arch/api/manifests/v1"
    import httpx

    answer = httpx.get(http, headers=server.basic_auth)
    assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert "archived" in answer.json()["errors"][0]["message"]
    assert httpx.head(server.url + f"/v2/arch/api/blobs/{layer}", headers=server.basic_auth).status_code == 404

    out = ecr.update_image_storage_class(repositoryName="arch/api", imageId={"imageDigest": digest},
                                         targetStorageClass="STANDARD")  # fmt: skip
    assert out["imageStatus"] == "ACTIVATING"
    assert ecr.list_images(repositoryName="arch/api", filter={"imageStatus": "ACTIVATING"})["imageIds"]
    for d in (digest, signature):
        server.registry.storage_classes.run_job(str(server.registry.manifests.get(ref, d).id))
    got = ecr.batch_get_image(repositoryName="arch/api", imageIds=[{"imageTag": "v1"}])
    assert got["failures"] == [] and got["images"][0]["imageId"]["imageDigest"] == digest
    assert httpx.get(server.url + f"/v2/arch/api/blobs/{layer}", headers=server.basic_auth).content == (
        b"layer one" * 1000
    )


HOSTILE = [
    ({"repositoryName": "arch/h", "imageId": {}, "targetStorageClass": "ARCHIVE"}, "InvalidParameterException"),
    ({"repositoryName": "arch/h", "imageId": {"imageTag": "v1"}, "targetStorageClass": "archive"}, None),
    ({"repositoryName": "arch/h", "imageId": {"imageTag": "v1"}}, None),
    ({"repositoryName": "arch/h", "imageId": {"imageDigest": "sha256:" + "0" * 64}, "targetStorageClass": "ARCHIVE"},
     "ImageNotFoundException"),
    ({"repositoryName": "arch/h", "imageId": {"imageTag": "x" * 301}, "targetStorageClass": "ARCHIVE"}, None),
    ([1, 2, 3], None),
]  # fmt: skip


def test_hostile_update_image_storage_class(server) -> None:
    # one server for every case (a server per case costs seconds on PostgreSQL)
    server.registry.repositories.create(RepoRef(ACCOUNT, "arch/h"))
    for body, code in HOSTILE:
        status, answer = raw_json(server, "UpdateImageStorageClass", body)
        assert status == 400, (body, answer)
        assert answer["__type"] == code if code else answer["__type"].endswith("Exception"), (body, answer)


def test_strict_lifecycle_setting_refuses_the_extension(ecr, server) -> None:
    server.registry.repositories.create(RepoRef(ACCOUNT, "arch/strict"))
    pulled = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "sinceImagePulled",
                                                           "countUnit": "days", "countNumber": 30},
                         "action": {"type": "expire"}}]}  # fmt: skip
    ecr.put_lifecycle_policy(repositoryName="arch/strict", lifecyclePolicyText=json.dumps(pulled))  # the extension
    server.registry.settings.lifecycle_ecr_strict = True
    try:
        with pytest.raises(ClientError) as exc:
            ecr.put_lifecycle_policy(repositoryName="arch/strict", lifecyclePolicyText=json.dumps(pulled))
        assert "lifecycle_ecr_strict" in error_of(exc)[1]
        overlapping = {"rules": [
            {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["prod", "v1"],
                                              "countType": "imageCountMoreThan", "countNumber": 3},
             "action": {"type": "expire"}},
            {"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPrefixList": ["prod"],
                                              "countType": "imageCountMoreThan", "countNumber": 5},
             "action": {"type": "expire"}},
        ]}  # fmt: skip
        with pytest.raises(ClientError) as exc:
            ecr.put_lifecycle_policy(repositoryName="arch/strict", lifecyclePolicyText=json.dumps(overlapping))
        assert '"prod" appears in rules 1 and 2' in error_of(exc)[1]
        pulled["rules"][0]["action"] = {"type": "transition", "targetStorageClass": "archive"}
        ecr.put_lifecycle_policy(repositoryName="arch/strict", lifecyclePolicyText=json.dumps(pulled))  # ECR's own
    finally:
        server.registry.settings.lifecycle_ecr_strict = False
