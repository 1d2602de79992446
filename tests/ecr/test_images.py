"""ECR image operations driven by boto3 and the AWS CLI: PutImage, BatchGetImage, BatchDeleteImage, ListImages,
DescribeImages (and their paginators), ListImageReferrers, DescribeImageScanFindings (and the ImageScanComplete
waiter's NotFound path), with every ECR exception and per-image failure code, and bad input on each operation."""

from __future__ import annotations

import json
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError, WaiterError

from soko.registry.models import RepoRef
from tests.conftest import ROOT_KEY_ID, ROOT_SECRET, SUITE_RETRIES
from tests.oci.helpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    push_blob,
    sha256,
)

ACCOUNT = "000000000000"


def error_of(excinfo) -> tuple[str, str]:
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


@pytest.fixture
def ecr(aws):
    return aws("ecr")


@pytest.fixture
def raw_ecr(server):
    """A boto3 client that skips client-side validation, so the server's own validation is what answers."""
    import boto3

    return boto3.client(
        "ecr",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_KEY_ID,
        aws_secret_access_key=ROOT_SECRET,
        config=Config(retries=SUITE_RETRIES, parameter_validation=False),
    )


def raw_json(server, operation: str, body) -> tuple[int, dict]:
    """POST a hand-made awsJson body (any JSON, or bytes), SigV4-signed as the root user."""
    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=data,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AmazonEC2ContainerRegistry_V20150921.{operation}",
        },
    )
    SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "ecr", "us-east-1").add_auth(request)
    r = httpx.post(server.url + "/", content=data, headers=dict(request.headers), timeout=60)
    return r.status_code, r.json()


def make_repo(server, name: str = "app", **kwargs) -> RepoRef:
    ref = RepoRef(ACCOUNT, name)
    server.registry.repositories.create(ref, **kwargs)
    return ref


def image_parts(client, repo: str, seed: str, *, media_type: str = DOCKER_MANIFEST) -> str:
    """Push a config and a layer over /v2/ and return the manifest text (not pushed)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer of {seed}".encode()
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    docker = media_type == DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config, DOCKER_CONFIG if docker else "application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor(layer, DOCKER_LAYER if docker else "application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    return json.dumps(manifest, indent=2)


def put(ecr, repo: str, manifest: str, tag: str | None = None, **kwargs) -> str:
    args = {"repositoryName": repo, "imageManifest": manifest, **kwargs}
    if tag:
        args["imageTag"] = tag
    return ecr.put_image(**args)["image"]["imageId"]["imageDigest"]


def index_of(*children: tuple[str, str]) -> str:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": media_type,
                    "digest": sha256(text.encode()),
                    "size": len(text.encode()),
                    "platform": {"architecture": f"arch{i}", "os": "linux"},
                }
                for i, (text, media_type) in enumerate(children)
            ],
        }
    )


# ---- PutImage --------------------------------------------------------------------------------------------------------
def test_put_image_stores_manifest_verbatim(ecr, client, server):
    make_repo(server)
    manifest = image_parts(client, "app", "a")
    image = ecr.put_image(repositoryName="app", imageManifest=manifest, imageTag="v1")["image"]
    digest = sha256(manifest.encode())
    assert image == {
        "registryId": ACCOUNT,
        "repositoryName": "app",
        "imageId": {"imageDigest": digest, "imageTag": "v1"},
        "imageManifest": manifest,
        "imageManifestMediaType": DOCKER_MANIFEST,
    }
    got = ecr.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "v1"}])["images"][0]
    assert got["imageManifest"] == manifest


def test_put_image_non_ascii_manifest_digest_is_of_utf8_bytes(ecr, client, server):
    make_repo(server)
    base = json.loads(image_parts(client, "app", "u", media_type=OCI_MANIFEST))
    base["annotations"] = {"org.opencontainers.image.title": "café ☕ — ü"}
    manifest = json.dumps(base, ensure_ascii=False)
    digest = put(ecr, "app", manifest, "uni")
    assert digest == sha256(manifest.encode("utf-8"))
    r = client.get("/v2/app/manifests/uni", headers={"Accept": OCI_MANIFEST})
    assert r.content == manifest.encode("utf-8")


def test_put_image_media_type_parameter_for_manifest_without_media_type(ecr, client, server):
    make_repo(server)
    doc = json.loads(image_parts(client, "app", "m", media_type=OCI_MANIFEST))
    del doc["mediaType"]
    manifest = json.dumps(doc)
    image = ecr.put_image(
        repositoryName="app", imageManifest=manifest, imageManifestMediaType=OCI_MANIFEST, imageTag="m"
    )["image"]
    assert image["imageManifestMediaType"] == OCI_MANIFEST
    # A media type that contradicts the manifest's own is refused.
    other = image_parts(client, "app", "n")
    with pytest.raises(ClientError) as exc:
        ecr.put_image(repositoryName="app", imageManifest=other, imageManifestMediaType=OCI_MANIFEST)
    assert error_of(exc)[0] == "InvalidParameterException"


def test_put_image_digest_check(ecr, client, server):
    make_repo(server)
    manifest = image_parts(client, "app", "d")
    digest = sha256(manifest.encode())
    assert put(ecr, "app", manifest, imageDigest=digest) == digest
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", manifest, "x", imageDigest="sha256:" + "0" * 64)
    assert error_of(exc)[0] == "ImageDigestDoesNotMatchException"
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", manifest, "x", imageDigest="sha256:nothex")
    assert error_of(exc)[0] == "InvalidParameterException"


def test_put_image_already_exists(ecr, client, server):
    make_repo(server)
    manifest = image_parts(client, "app", "e")
    digest = put(ecr, "app", manifest, "v1")
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", manifest, "v1")
    code, message = error_of(exc)
    assert code == "ImageAlreadyExistsException"
    assert message == (
        f"Image with digest '{digest}' and tag 'v1' already exists in the repository with name 'app' in registry "
        f"with id '{ACCOUNT}'"
    )
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", manifest)  # untagged re-push of an existing image
    assert error_of(exc)[0] == "ImageAlreadyExistsException"
    # Another tag for the same image is fine.
    assert put(ecr, "app", manifest, "v2") == digest
    ids = ecr.list_images(repositoryName="app")["imageIds"]
    assert sorted(i["imageTag"] for i in ids) == ["v1", "v2"]


def test_put_image_identical_after_v2_push_and_with_digest_already_exists(ecr, client, server):
    """The same manifest with a tag it already has fails however it first arrived (/v2/ or PutImage)."""
    make_repo(server)
    manifest = image_parts(client, "app", "same")
    r = client.put("/v2/app/manifests/v1", content=manifest.encode(), headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 201
    digest = sha256(manifest.encode())
    for kwargs in ({}, {"imageDigest": digest}, {"imageManifestMediaType": DOCKER_MANIFEST}):
        with pytest.raises(ClientError) as exc:
            put(ecr, "app", manifest, "v1", **kwargs)
        assert error_of(exc)[0] == "ImageAlreadyExistsException", kwargs
    assert [i["imageTag"] for i in ecr.list_images(repositoryName="app")["imageIds"]] == ["v1"]


def test_put_image_without_any_media_type_is_refused(ecr, client, server):
    """ECR does not guess a manifest's media type: without mediaType in it nor imageManifestMediaType, refused."""
    make_repo(server)
    doc = json.loads(image_parts(client, "app", "nomt", media_type=OCI_MANIFEST))
    del doc["mediaType"]
    text = json.dumps(doc)
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", text, "v1")
    code, message = error_of(exc)
    assert code == "InvalidParameterException"
    assert message.startswith("Invalid parameter at 'imageManifestMediaType' failed to satisfy constraint: ")
    assert ecr.list_images(repositoryName="app")["imageIds"] == []  # nothing stored
    put(ecr, "app", text, "v1", imageManifestMediaType=OCI_MANIFEST)
    (image,) = ecr.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "v1"}])["images"]
    assert image["imageManifestMediaType"] == OCI_MANIFEST


def test_put_image_immutable_tag(ecr, client, server):
    make_repo(server, tag_mutability="IMMUTABLE")
    first = image_parts(client, "app", "i1")
    second = image_parts(client, "app", "i2")
    put(ecr, "app", first, "release")
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", second, "release")
    code, message = error_of(exc)
    assert code == "ImageTagAlreadyExistsException"
    assert "release" in message and "immutable" in message
    # The same image again under the same tag is ImageAlreadyExists, not a mutability error.
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", first, "release")
    assert error_of(exc)[0] == "ImageAlreadyExistsException"


def test_put_image_layers_and_referenced_images_not_found(ecr, client, server):
    make_repo(server)
    doc = json.loads(image_parts(client, "app", "l"))
    doc["layers"].append({"mediaType": DOCKER_LAYER, "digest": "sha256:" + "a" * 64, "size": 3})
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", json.dumps(doc), "l")
    code, message = error_of(exc)
    assert code == "LayersNotFoundException" and "sha256:" + "a" * 64 in message
    missing_child = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "x": 1})
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", index_of((missing_child, DOCKER_MANIFEST)), "idx")
    assert error_of(exc)[0] == "ReferencedImagesNotFoundException"


def test_put_image_tag_limit_is_shared_with_v2(ecr, client, server):
    import sqlalchemy as sa

    from soko.meta.schema import manifests, tags
    from soko.registry.quotas import DEFAULT_TAGS_PER_IMAGE as MAX_TAGS_PER_IMAGE

    make_repo(server)
    manifest = image_parts(client, "app", "t")
    payload = manifest.encode()
    put(ecr, "app", manifest, "t0")
    with server.registry.ctx.write(invalidates=True) as conn:  # fill up to the quota in one transaction
        mid, rid = conn.execute(sa.select(manifests.c.id, manifests.c.repository_id)).one()
        conn.execute(
            sa.insert(tags),
            [
                {"repository_id": rid, "name": f"t{i}", "manifest_id": mid, "updated_at": 0.0}
                for i in range(1, MAX_TAGS_PER_IMAGE)
            ],
        )
    with pytest.raises(ClientError) as exc:
        put(ecr, "app", manifest, "one-more")
    code, message = error_of(exc)
    assert code == "LimitExceededException" and "1000" in message
    r = client.put("/v2/app/manifests/one-more", content=payload, headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code >= 400
    assert ecr.describe_images(repositoryName="app")["imageDetails"][0]["imageTags"].__len__() == MAX_TAGS_PER_IMAGE


def test_put_image_bad_input(ecr, raw_ecr, client, server):
    make_repo(server)
    with pytest.raises(ParamValidationError):
        ecr.put_image(repositoryName="app")
    with pytest.raises(ClientError) as exc:
        raw_ecr.put_image(repositoryName="app")
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        raw_ecr.put_image(repositoryName="app", imageManifest=123)
    assert error_of(exc)[0] in ("SerializationException", "InvalidParameterException")
    # 5 MiB manifest: over the model's 4 MiB (4,194,304 characters).
    huge = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "pad": "x" * (5 << 20)})
    with pytest.raises(ClientError) as exc:
        ecr.put_image(repositoryName="app", imageManifest=huge)
    assert error_of(exc)[0] == "InvalidParameterException"
    for bad in ("not json", "[]", json.dumps({"schemaVersion": 1}), json.dumps({"schemaVersion": 2})):
        with pytest.raises(ClientError) as exc:
            ecr.put_image(repositoryName="app", imageManifest=bad, imageTag="bad")
        assert error_of(exc)[0] == "InvalidParameterException", bad
    manifest = image_parts(client, "app", "b")
    for tag in ("-starts-with-dash", "has space", "x" * 301):
        with pytest.raises(ClientError) as exc:
            ecr.put_image(repositoryName="app", imageManifest=manifest, imageTag=tag)
        assert error_of(exc)[0] == "InvalidParameterException", tag
    with pytest.raises(ClientError) as exc:
        ecr.put_image(repositoryName="Bad_Name", imageManifest=manifest)
    assert error_of(exc)[0] == "InvalidParameterException"
    # Unknown members are ignored, as AWS's JSON services do.
    body = {"repositoryName": "app", "imageManifest": manifest, "imageTag": "extra", "bogus": {"x": 1}}
    status, out = raw_json(server, "PutImage", body)
    assert status == 200 and out["image"]["imageId"]["imageTag"] == "extra"
    status, out = raw_json(server, "PutImage", {"repositoryName": "app", "imageManifest": manifest, "imageTag": 5})
    assert status == 400 and out["__type"] in ("SerializationException", "InvalidParameterException")
    status, out = raw_json(server, "PutImage", b"{not json")
    assert status == 400 and out["__type"] == "SerializationException"


# ---- BatchGetImage ---------------------------------------------------------------------------------------------------
def test_batch_get_image_failures(ecr, client, server):
    make_repo(server)
    manifest = image_parts(client, "app", "g")
    digest = put(ecr, "app", manifest, "v1")
    other = put(ecr, "app", image_parts(client, "app", "g2"), "v2")
    out = ecr.batch_get_image(
        repositoryName="app",
        imageIds=[
            {"imageTag": "v1"},
            {"imageDigest": digest},
            {"imageDigest": digest, "imageTag": "v1"},
            {"imageTag": "v1"},  # a repeated identifier is answered once
            {"imageTag": "nope"},
            {"imageDigest": "sha256:" + "f" * 64},
            {"imageDigest": "sha256:xyz"},
            {"imageTag": "bad tag"},
            {},
            {"imageDigest": other, "imageTag": "v1"},
        ],
    )
    assert [i["imageId"] for i in out["images"]] == [
        {"imageDigest": digest, "imageTag": "v1"},
        {"imageDigest": digest},
        {"imageDigest": digest, "imageTag": "v1"},
    ]
    codes = [(f["imageId"], f["failureCode"]) for f in out["failures"]]
    assert codes == [
        ({"imageTag": "nope"}, "ImageNotFound"),
        ({"imageDigest": "sha256:" + "f" * 64}, "ImageNotFound"),
        ({"imageDigest": "sha256:xyz"}, "InvalidImageDigest"),
        ({"imageTag": "bad tag"}, "InvalidImageTag"),
        ({}, "MissingDigestAndTag"),
        ({"imageDigest": other, "imageTag": "v1"}, "ImageTagDoesNotMatchDigest"),
    ]
    assert all(f["failureReason"] for f in out["failures"])
    for image in out["images"]:
        assert image["imageManifest"] == manifest
        assert image["imageManifestMediaType"] == DOCKER_MANIFEST
        assert image["registryId"] == ACCOUNT and image["repositoryName"] == "app"


def test_batch_get_image_accepted_media_types(ecr, client, server):
    make_repo(server)
    digest = put(ecr, "app", image_parts(client, "app", "oci", media_type=OCI_MANIFEST), "oci")
    ok = ecr.batch_get_image(
        repositoryName="app", imageIds=[{"imageTag": "oci"}], acceptedMediaTypes=[DOCKER_MANIFEST, OCI_MANIFEST]
    )
    assert ok["images"][0]["imageId"]["imageDigest"] == digest and not ok["failures"]
    refused = ecr.batch_get_image(
        repositoryName="app", imageIds=[{"imageTag": "oci"}], acceptedMediaTypes=[DOCKER_MANIFEST]
    )
    assert refused["images"] == []
    (failure,) = refused["failures"]
    assert failure["failureCode"] == "ImageNotFound"
    assert OCI_MANIFEST in failure["failureReason"]


def test_batch_get_image_records_pull_time(ecr, client, server):
    make_repo(server)
    put(ecr, "app", image_parts(client, "app", "p"), "v1")
    (detail,) = ecr.describe_images(repositoryName="app")["imageDetails"]
    assert "lastRecordedPullTime" not in detail
    before = time.time()
    ecr.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "v1"}])
    server.registry.manifests.flush_pulls()
    (detail,) = ecr.describe_images(repositoryName="app")["imageDetails"]
    assert detail["lastRecordedPullTime"].timestamp() >= before - 1
    # A /v2/ pull moves it too.
    time.sleep(0.05)
    first = detail["lastRecordedPullTime"]
    client.get("/v2/app/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    server.registry.manifests.flush_pulls()
    (detail,) = ecr.describe_images(repositoryName="app")["imageDetails"]
    assert detail["lastRecordedPullTime"] > first


def test_batch_get_image_errors(ecr, raw_ecr, server):
    with pytest.raises(ClientError) as exc:
        ecr.batch_get_image(repositoryName="missing", imageIds=[{"imageTag": "x"}])
    code, message = error_of(exc)
    assert code == "RepositoryNotFoundException"
    assert message == f"The repository with name 'missing' does not exist in the registry with id '{ACCOUNT}'"
    make_repo(server)
    with pytest.raises(ClientError) as exc:
        raw_ecr.batch_get_image(repositoryName="app", imageIds=[])
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        raw_ecr.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "x"}] * 101)
    assert error_of(exc)[0] == "InvalidParameterException"
    status, out = raw_json(server, "BatchGetImage", {"repositoryName": "app", "imageIds": "v1"})
    assert status == 400 and out["__type"] in ("SerializationException", "InvalidParameterException")


# ---- BatchDeleteImage ------------------------------------------------------------------------------------------------
def test_batch_delete_by_tag_untags_and_last_tag_deletes(ecr, client, server):
    make_repo(server)
    digest = put(ecr, "app", image_parts(client, "app", "del"), "a")
    put(ecr, "app", image_parts(client, "app", "del"), "b")
    out = ecr.batch_delete_image(repositoryName="app", imageIds=[{"imageTag": "a"}])
    assert out["imageIds"] == [{"imageDigest": digest, "imageTag": "a"}] and out["failures"] == []
    (detail,) = ecr.describe_images(repositoryName="app")["imageDetails"]
    assert detail["imageTags"] == ["b"]
    # Removing the last tag removes the image (ECR: "When you remove the last tag ... the image is deleted").
    ecr.batch_delete_image(repositoryName="app", imageIds=[{"imageTag": "b"}])
    assert ecr.describe_images(repositoryName="app")["imageDetails"] == []


def test_batch_delete_by_digest_removes_all_tags(ecr, client, server):
    make_repo(server)
    manifest = image_parts(client, "app", "dd")
    digest = put(ecr, "app", manifest, "x")
    put(ecr, "app", manifest, "y")
    keep = put(ecr, "app", image_parts(client, "app", "keep"), "keep")
    out = ecr.batch_delete_image(repositoryName="app", imageIds=[{"imageDigest": digest}])
    assert out["imageIds"] == [{"imageDigest": digest, "imageTag": "x"}, {"imageDigest": digest, "imageTag": "y"}]
    ids = ecr.list_images(repositoryName="app")["imageIds"]
    assert ids == [{"imageDigest": keep, "imageTag": "keep"}]
    assert client.get("/v2/app/manifests/x").status_code == 404
    out = ecr.batch_delete_image(
        repositoryName="app", imageIds=[{"imageDigest": digest}, {"imageTag": "x"}, {"imageDigest": "sha256:zz"}, {}]
    )
    assert out["imageIds"] == []
    assert [f["failureCode"] for f in out["failures"]] == [
        "ImageNotFound",
        "ImageNotFound",
        "InvalidImageDigest",
        "MissingDigestAndTag",
    ]


def test_batch_delete_index_child_refused_until_index_goes(ecr, client, server):
    make_repo(server)
    child_a = image_parts(client, "app", "ca")
    child_b = image_parts(client, "app", "cb")
    a = put(ecr, "app", child_a)
    b = put(ecr, "app", child_b)
    index = index_of((child_a, DOCKER_MANIFEST), (child_b, DOCKER_MANIFEST))
    idx = put(ecr, "app", index, "multi")
    out = ecr.batch_delete_image(repositoryName="app", imageIds=[{"imageDigest": a}])
    assert out["imageIds"] == []
    (failure,) = out["failures"]
    assert failure["failureCode"] == "ImageReferencedByManifestList"
    assert idx in failure["failureReason"]
    # Children listed before their index in one request: the index goes, then the children.
    out = ecr.batch_delete_image(
        repositoryName="app", imageIds=[{"imageDigest": a}, {"imageDigest": b}, {"imageDigest": idx}]
    )
    assert out["failures"] == []
    assert {i["imageDigest"] for i in out["imageIds"]} == {a, b, idx}
    assert ecr.list_images(repositoryName="app")["imageIds"] == []


def test_batch_delete_last_tag_of_index_child_keeps_child(ecr, client, server):
    make_repo(server)
    child = image_parts(client, "app", "kc")
    c = put(ecr, "app", child, "child-tag")
    put(ecr, "app", index_of((child, DOCKER_MANIFEST)), "list")
    ecr.batch_delete_image(repositoryName="app", imageIds=[{"imageTag": "child-tag"}])
    digests = {d["imageDigest"] for d in ecr.describe_images(repositoryName="app")["imageDetails"]}
    assert c in digests


def test_batch_delete_image_errors(ecr, raw_ecr, server):
    with pytest.raises(ClientError) as exc:
        ecr.batch_delete_image(repositoryName="missing", imageIds=[{"imageTag": "x"}])
    assert error_of(exc)[0] == "RepositoryNotFoundException"
    make_repo(server)
    with pytest.raises(ClientError) as exc:
        raw_ecr.batch_delete_image(repositoryName="app")
    assert error_of(exc)[0] == "InvalidParameterException"


# ---- ListImages / DescribeImages -------------------------------------------------------------------------------------
@pytest.fixture
def populated(ecr, client, server):
    """7 images: 5 tagged (one with two tags), 2 untagged."""
    make_repo(server)
    digests = []
    for i in range(7):
        tag = f"v{i}" if i < 5 else None
        digests.append(put(ecr, "app", image_parts(client, "app", f"img{i}"), tag))
    put(ecr, "app", image_parts(client, "app", "img0"), "latest")
    return digests


def test_list_images_tag_status_and_paginator(ecr, populated):
    all_ids = ecr.list_images(repositoryName="app")["imageIds"]
    assert len(all_ids) == 8  # one entry per tag, one per untagged image
    tagged = ecr.list_images(repositoryName="app", filter={"tagStatus": "TAGGED"})["imageIds"]
    assert sorted(i["imageTag"] for i in tagged) == ["latest", "v0", "v1", "v2", "v3", "v4"]
    untagged = ecr.list_images(repositoryName="app", filter={"tagStatus": "UNTAGGED"})["imageIds"]
    assert untagged == [{"imageDigest": populated[5]}, {"imageDigest": populated[6]}]
    pages = list(ecr.get_paginator("list_images").paginate(repositoryName="app", PaginationConfig={"PageSize": 3}))
    assert [len(p["imageIds"]) for p in pages] == [3, 3, 2]
    assert [i for p in pages for i in p["imageIds"]] == all_ids
    page = ecr.list_images(repositoryName="app", maxResults=8)
    assert "nextToken" not in page
    with pytest.raises(ClientError) as exc:
        ecr.list_images(repositoryName="app", nextToken="garbage!")
    assert error_of(exc)[0] == "InvalidParameterException"
    assert ecr.list_images(repositoryName="app", filter={"imageStatus": "ARCHIVED"})["imageIds"] == []


def test_describe_images_fields(ecr, client, server, populated):
    details = ecr.describe_images(repositoryName="app")["imageDetails"]
    assert [d["imageDigest"] for d in details] == populated
    first = details[0]
    assert first["imageTags"] == ["latest", "v0"]
    assert first["registryId"] == ACCOUNT and first["repositoryName"] == "app"
    assert first["imageManifestMediaType"] == DOCKER_MANIFEST
    assert first["artifactMediaType"] == DOCKER_CONFIG
    assert first["imageStatus"] == "ACTIVE"
    assert "imageScanStatus" not in first and "imageScanFindingsSummary" not in first
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": "img0"}).encode()
    assert first["imageSizeInBytes"] == len(config) + len(b"layer of img0")
    assert abs(first["imagePushedAt"].timestamp() - time.time()) < 120
    assert "imageTags" not in details[5]
    one = ecr.describe_images(repositoryName="app", imageIds=[{"imageTag": "v1"}, {"imageDigest": populated[1]}])
    assert [d["imageDigest"] for d in one["imageDetails"]] == [populated[1]]
    with pytest.raises(ClientError) as exc:
        ecr.describe_images(repositoryName="app", imageIds=[{"imageTag": "v1"}, {"imageTag": "gone"}])
    code, message = error_of(exc)
    assert code == "ImageNotFoundException"
    assert message == (
        "The image with imageId {imageDigest:'null', imageTag:'gone'} does not exist within the repository with "
        f"name 'app' in the registry with id '{ACCOUNT}'"
    )


def test_describe_images_filters_and_paginator(ecr, populated):
    tagged = ecr.describe_images(repositoryName="app", filter={"tagStatus": "TAGGED"})["imageDetails"]
    assert [d["imageDigest"] for d in tagged] == populated[:5]
    untagged = ecr.describe_images(repositoryName="app", filter={"tagStatus": "UNTAGGED"})["imageDetails"]
    assert [d["imageDigest"] for d in untagged] == populated[5:]
    pages = list(ecr.get_paginator("describe_images").paginate(repositoryName="app", PaginationConfig={"PageSize": 2}))
    assert [len(p["imageDetails"]) for p in pages] == [2, 2, 2, 1]
    assert [d["imageDigest"] for p in pages for d in p["imageDetails"]] == populated
    with pytest.raises(ClientError) as exc:
        ecr.describe_images(repositoryName="app", imageIds=[{"imageTag": "v1"}], maxResults=5)
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        ecr.describe_images(repositoryName="app", imageIds=[{"imageDigest": "md5:abc"}])
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        ecr.describe_images(repositoryName="app", maxResults=1001)
    assert error_of(exc)[0] == "InvalidParameterException"


def test_describe_images_index_size_and_referrer_subject(ecr, client, server):
    make_repo(server)
    small = image_parts(client, "app", "s")
    large_doc = json.loads(image_parts(client, "app", "large"))
    big_layer = b"B" * 5000
    push_blob(client, "app", big_layer)
    large_doc["layers"].append(descriptor(big_layer, DOCKER_LAYER))
    large = json.dumps(large_doc)
    s, big = put(ecr, "app", small), put(ecr, "app", large)
    idx = put(ecr, "app", index_of((small, DOCKER_MANIFEST), (large, DOCKER_MANIFEST)), "multi")
    details = {d["imageDigest"]: d for d in ecr.describe_images(repositoryName="app")["imageDetails"]}
    assert details[idx]["imageSizeInBytes"] == details[big]["imageSizeInBytes"] > details[s]["imageSizeInBytes"]
    assert details[idx]["imageManifestMediaType"] == OCI_INDEX
    # A referrer (an SBOM-like artifact) names its subject.
    empty = b"{}"
    push_blob(client, "app", empty)
    sbom = b'{"sbom": true}'
    push_blob(client, "app", sbom)
    referrer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": descriptor(empty, "application/vnd.oci.empty.v1+json"),
            "layers": [descriptor(sbom, "application/spdx+json")],
            "subject": {"mediaType": OCI_INDEX, "digest": idx, "size": details[idx]["imageSizeInBytes"]},
            "annotations": {"kind": "sbom"},
        }
    )
    # subject size must be the manifest's size for strict clients; the registry does not check it.
    ref_digest = put(ecr, "app", referrer)
    (detail,) = ecr.describe_images(repositoryName="app", imageIds=[{"imageDigest": ref_digest}])["imageDetails"]
    assert detail["subjectManifestDigest"] == idx
    assert detail["artifactMediaType"] == "application/spdx+json"
    # ListImageReferrers, with the artifactTypes filter.
    referrers = ecr.list_image_referrers(repositoryName="app", subjectId={"imageDigest": idx})["referrers"]
    assert referrers == [
        {
            "digest": ref_digest,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "size": len(referrer.encode()),
            "annotations": {"kind": "sbom"},
            "artifactStatus": "ACTIVE",
        }
    ]
    none = ecr.list_image_referrers(
        repositoryName="app", subjectId={"imageDigest": idx}, filter={"artifactTypes": ["application/other"]}
    )
    assert none["referrers"] == []
    assert ecr.list_image_referrers(repositoryName="app", subjectId={"imageDigest": s})["referrers"] == []
    with pytest.raises(ClientError) as exc:
        ecr.list_image_referrers(repositoryName="app", subjectId={"imageDigest": "sha256:bad"})
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        ecr.list_image_referrers(repositoryName="nope", subjectId={"imageDigest": idx})
    assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_list_and_describe_missing_repository(ecr):
    for call in (ecr.list_images, ecr.describe_images):
        with pytest.raises(ClientError) as exc:
            call(repositoryName="nothing-here")
        assert error_of(exc)[0] == "RepositoryNotFoundException"


# ---- DescribeImageScanFindings ---------------------------------------------------------------------------------------
def test_describe_image_scan_findings_not_found_and_waiter(ecr, client, server):
    make_repo(server)
    digest = put(ecr, "app", image_parts(client, "app", "scan"), "v1")
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName="app", imageId={"imageTag": "v1"})
    assert error_of(exc) == (
        "ScanNotFoundException",
        "Image scan does not exist for the image with '{imageDigest:'null', imageTag:'v1'}' in the repository with "
        f"name 'app' in the registry with id '{ACCOUNT}'",
    )
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName="app", imageId={"imageDigest": digest})
    assert f"'{{imageDigest:'{digest}', imageTag:'null'}}'" in error_of(exc)[1]
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName="app", imageId={"imageTag": "missing"})
    assert error_of(exc)[0] == "ImageNotFoundException"
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName="nope", imageId={"imageTag": "v1"})
    assert error_of(exc)[0] == "RepositoryNotFoundException"
    waiter = ecr.get_waiter("image_scan_complete")
    calls = []
    ecr.meta.events.register("before-call.ecr.DescribeImageScanFindings", lambda **_: calls.append(1))
    with pytest.raises(WaiterError) as exc:
        waiter.wait(repositoryName="app", imageId={"imageTag": "v1"}, WaiterConfig={"Delay": 1, "MaxAttempts": 3})
    assert "ScanNotFoundException" in str(exc.value)
    assert len(calls) == 1  # an error no acceptor matches ends the wait at once (counted, not timed)


# ---- the AWS CLI -----------------------------------------------------------------------------------------------------
def test_aws_cli_put_list_describe_get_delete(aws_cli, client, server, tmp_path):
    make_repo(server)
    manifest = image_parts(client, "app", "cli")
    path = tmp_path / "manifest.json"
    path.write_text(manifest)
    code, out, err = aws_cli(
        "ecr", "put-image", "--repository-name", "app", "--image-tag", "cli", "--image-manifest", f"file://{path}"
    )
    assert code == 0, err
    digest = out["image"]["imageId"]["imageDigest"]
    assert digest == sha256(manifest.encode())
    code, out, err = aws_cli("ecr", "list-images", "--repository-name", "app", "--filter", "tagStatus=TAGGED")
    assert code == 0, err
    assert out["imageIds"] == [{"imageDigest": digest, "imageTag": "cli"}]
    code, out, err = aws_cli("ecr", "describe-images", "--repository-name", "app", "--image-ids", "imageTag=cli")
    assert code == 0, err
    assert out["imageDetails"][0]["imageTags"] == ["cli"]
    code, out, err = aws_cli("ecr", "batch-get-image", "--repository-name", "app", "--image-ids", "imageTag=cli")
    assert code == 0, err
    assert out["images"][0]["imageManifest"] == manifest
    code, out, err = aws_cli("ecr", "batch-delete-image", "--repository-name", "app", "--image-ids", "imageTag=cli")
    assert code == 0, err
    assert out["imageIds"] == [{"imageDigest": digest, "imageTag": "cli"}]
    code, out, err = aws_cli("ecr", "describe-images", "--repository-name", "app", "--image-ids", "imageTag=cli")
    assert code != 0 and "ImageNotFoundException" in err
    code, out, err = aws_cli(
        "ecr", "describe-image-scan-findings", "--repository-name", "app", "--image-id", "imageTag=cli"
    )
    assert code != 0 and "ImageNotFoundException" in err
