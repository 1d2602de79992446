"""One image, two APIs: pushed through ECR's layer API + PutImage and pulled over /v2/ byte for byte, and the
reverse (pushed over /v2/, fetched with BatchGetImage + GetDownloadUrlForLayer); tag immutability answered the
same way by both."""

from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.ecr.test_images import error_of, make_repo
from tests.ecr.test_layers import upload
from tests.oci.helpers import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, descriptor, push_image, sha256


@pytest.fixture
def ecr(aws):
    return aws("ecr")


def test_push_via_layer_api_pull_via_v2(ecr, client, server):
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    layer = bytes((i * 7) % 251 for i in range(300_000))
    for blob in (config, layer):
        upload_id = upload(ecr, "cross", blob, 5 << 20)  # one part each (every part but the last is ≥ 5 MiB)
        ecr.complete_layer_upload(repositoryName="cross", uploadId=upload_id, layerDigests=[sha256(blob)])
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(config, DOCKER_CONFIG),
            "layers": [descriptor(layer, DOCKER_LAYER)],
        },
        indent=3,
    )
    image = ecr.put_image(repositoryName="cross", imageManifest=manifest, imageTag="v1")["image"]
    digest = sha256(manifest.encode())
    assert image["imageId"]["imageDigest"] == digest
    r = client.get("/v2/cross/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.content == manifest.encode() and r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/cross/blobs/{sha256(layer)}").content == layer
    assert client.get(f"/v2/cross/blobs/{sha256(config)}").content == config


def test_push_via_v2_pull_via_ecr_api(ecr, client, server):
    digest, payload = push_image(client, "v2push", "v1", seed="rev", layers=2)
    out = ecr.batch_get_image(repositoryName="v2push", imageIds=[{"imageTag": "v1"}])
    (image,) = out["images"]
    assert image["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    assert image["imageManifest"].encode() == payload
    manifest = json.loads(image["imageManifest"])
    for desc in [manifest["config"], *manifest["layers"]]:
        url = ecr.get_download_url_for_layer(repositoryName="v2push", layerDigest=desc["digest"])["downloadUrl"]
        body = httpx.get(url).content
        assert sha256(body) == desc["digest"] and len(body) == desc["size"]
    avail = ecr.batch_check_layer_availability(
        repositoryName="v2push", layerDigests=[d["digest"] for d in manifest["layers"]]
    )
    assert {layer["layerAvailability"] for layer in avail["layers"]} == {"AVAILABLE"}


def test_immutability_is_the_same_on_both_apis(ecr, client, server):
    make_repo(server, "locked", tag_mutability="IMMUTABLE")
    push_image(client, "locked", "v1", seed="one")
    _, other = push_image(client, "locked", "other", seed="two")
    with pytest.raises(ClientError) as exc:
        ecr.put_image(repositoryName="locked", imageManifest=other.decode(), imageTag="v1")
    code, ecr_message = error_of(exc)
    assert code == "ImageTagAlreadyExistsException"
    r = client.put(
        "/v2/locked/manifests/v1", content=other, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    )
    assert r.status_code in (400, 403, 409)
    oci_message = r.json()["errors"][0]["message"]
    assert ecr_message == oci_message
    # Moving a tag pushed through ECR is refused over /v2/ too.
    ecr.put_image(repositoryName="locked", imageManifest=other.decode(), imageTag="v2")
    _, third = push_image(client, "locked", "third", seed="three")
    r = client.put(
        "/v2/locked/manifests/v2", content=third, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    )
    assert r.status_code in (400, 403, 409)
