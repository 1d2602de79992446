"""ECR's layer API driven by boto3: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, GetDownloadUrlForLayer — part rules, every exception, and the presigned layer URL."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.ecr.test_images import error_of, image_parts, make_repo, put, raw_json
from tests.http.test_data_listener import _metered
from tests.oci.helpers import push_blob, sha256

MiB = 1 << 20


@pytest.fixture
def ecr(aws):
    return aws("ecr")


def upload(ecr, repo: str, data: bytes, part_size: int) -> str:
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    for first in range(0, len(data), part_size):
        part = data[first : first + part_size]
        out = ecr.upload_layer_part(
            repositoryName=repo,
            uploadId=upload_id,
            partFirstByte=first,
            partLastByte=first + len(part) - 1,
            layerPartBlob=part,
        )
        assert out["lastByteReceived"] == first + len(part) - 1
        assert out["uploadId"] == upload_id and out["repositoryName"] == repo
    return upload_id


def test_upload_in_parts_and_complete(ecr, server):
    make_repo(server)
    data = bytes(range(256)) * 50_000  # 12.2 MiB: two 5 MiB parts and a short last one
    init = ecr.initiate_layer_upload(repositoryName="app")
    assert init["partSize"] == 10 * 1024 * 1024
    upload_id = upload(ecr, "app", data, 5 * MiB)
    digest = sha256(data)
    out = ecr.complete_layer_upload(repositoryName="app", uploadId=upload_id, layerDigests=[digest])
    assert out == {
        "registryId": "000000000000",
        "repositoryName": "app",
        "uploadId": upload_id,
        "layerDigest": digest,
        "ResponseMetadata": out["ResponseMetadata"],
    }
    layers = ecr.batch_check_layer_availability(repositoryName="app", layerDigests=[digest])["layers"]
    assert layers == [{"layerDigest": digest, "layerAvailability": "AVAILABLE", "layerSize": len(data)}]


def test_upload_part_rules(ecr, server):
    make_repo(server)
    upload_id = ecr.initiate_layer_upload(repositoryName="app")["uploadId"]
    with pytest.raises(ClientError) as exc:  # must start at byte 0
        ecr.upload_layer_part(
            repositoryName="app", uploadId=upload_id, partFirstByte=5, partLastByte=9, layerPartBlob=b"12345"
        )
    assert error_of(exc)[0] == "InvalidLayerPartException"
    assert exc.value.response["lastValidByteReceived"] == -1
    assert exc.value.response["uploadId"] == upload_id
    ecr.upload_layer_part(
        repositoryName="app", uploadId=upload_id, partFirstByte=0, partLastByte=4, layerPartBlob=b"12345"
    )
    with pytest.raises(ClientError) as exc:  # a gap
        ecr.upload_layer_part(
            repositoryName="app", uploadId=upload_id, partFirstByte=6, partLastByte=7, layerPartBlob=b"67"
        )
    assert error_of(exc)[0] == "InvalidLayerPartException"
    assert exc.value.response["lastValidByteReceived"] == 4
    with pytest.raises(ClientError) as exc:  # a resend of bytes already held
        ecr.upload_layer_part(
            repositoryName="app", uploadId=upload_id, partFirstByte=0, partLastByte=4, layerPartBlob=b"12345"
        )
    assert error_of(exc)[0] == "InvalidLayerPartException"
    with pytest.raises(ClientError) as exc:  # partLastByte is inclusive: 5..9 is 5 bytes, not 4
        ecr.upload_layer_part(
            repositoryName="app", uploadId=upload_id, partFirstByte=5, partLastByte=9, layerPartBlob=b"6789"
        )
    assert error_of(exc)[0] == "InvalidLayerPartException"
    with pytest.raises(ClientError) as exc:  # an empty part
        ecr.upload_layer_part(
            repositoryName="app", uploadId=upload_id, partFirstByte=5, partLastByte=4, layerPartBlob=b""
        )
    assert error_of(exc)[0] == "InvalidLayerPartException"
    # A part under 5 MiB is accepted (it may be the last); completion refuses it when it was not.
    ecr.upload_layer_part(
        repositoryName="app", uploadId=upload_id, partFirstByte=5, partLastByte=9, layerPartBlob=b"67890"
    )
    with pytest.raises(ClientError) as exc:
        ecr.complete_layer_upload(repositoryName="app", uploadId=upload_id, layerDigests=[sha256(b"1234567890")])
    assert error_of(exc)[0] == "LayerPartTooSmallException"
    assert "5 MiB" in error_of(exc)[1] and "ending at byte 4 " in error_of(exc)[1]


def test_layer_part_too_small_only_when_not_last(ecr, server):
    make_repo(server)
    big, tail = bytes(range(256)) * (5 * MiB // 256), b"tail"
    ok = upload(ecr, "app", big + tail, 5 * MiB)  # a full 5 MiB part, then a short last one
    assert ecr.complete_layer_upload(repositoryName="app", uploadId=ok, layerDigests=[sha256(big + tail)])
    single = upload(ecr, "app", b"one small layer", 1000)  # a single short part is the last one
    assert ecr.complete_layer_upload(repositoryName="app", uploadId=single, layerDigests=[sha256(b"one small layer")])
    data = tail + big  # a short first part, then a full one
    refused = ecr.initiate_layer_upload(repositoryName="app")["uploadId"]
    for first, part in ((0, tail), (len(tail), big)):
        ecr.upload_layer_part(
            repositoryName="app", uploadId=refused, partFirstByte=first, partLastByte=first + len(part) - 1,
            layerPartBlob=part,
        )
    with pytest.raises(ClientError) as exc:
        ecr.complete_layer_upload(repositoryName="app", uploadId=refused, layerDigests=[sha256(data)])
    assert error_of(exc)[0] == "LayerPartTooSmallException"


def test_complete_errors(ecr, server):
    make_repo(server)
    empty = ecr.initiate_layer_upload(repositoryName="app")["uploadId"]
    with pytest.raises(ClientError) as exc:
        ecr.complete_layer_upload(repositoryName="app", uploadId=empty, layerDigests=[sha256(b"")])
    assert error_of(exc)[0] == "EmptyUploadException"
    upload_id = upload(ecr, "app", b"content", 100)
    with pytest.raises(ClientError) as exc:
        ecr.complete_layer_upload(repositoryName="app", uploadId=upload_id, layerDigests=[sha256(b"other")])
    assert error_of(exc)[0] == "InvalidLayerException"
    with pytest.raises(ClientError) as exc:
        ecr.complete_layer_upload(
            repositoryName="app", uploadId=upload_id, layerDigests=[sha256(b"content"), sha256(b"x")]
        )
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        ecr.complete_layer_upload(repositoryName="app", uploadId=upload_id, layerDigests=["md5:abcdef"])
    assert error_of(exc)[0] == "InvalidLayerException"
    # The upload survives a wrong digest; the right one completes it.
    ecr.complete_layer_upload(repositoryName="app", uploadId=upload_id, layerDigests=[sha256(b"content")])
    with pytest.raises(ClientError) as exc:  # finished: gone
        ecr.complete_layer_upload(repositoryName="app", uploadId=upload_id, layerDigests=[sha256(b"content")])
    assert error_of(exc)[0] == "UploadNotFoundException"
    again = upload(ecr, "app", b"content", 100)
    with pytest.raises(ClientError) as exc:
        ecr.complete_layer_upload(repositoryName="app", uploadId=again, layerDigests=[sha256(b"content")])
    assert error_of(exc)[0] == "LayerAlreadyExistsException"
    unknown = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    with pytest.raises(ClientError) as exc:
        ecr.upload_layer_part(
            repositoryName="app", uploadId=unknown, partFirstByte=0, partLastByte=0, layerPartBlob=b"x"
        )
    assert error_of(exc)[0] == "UploadNotFoundException"
    with pytest.raises(ClientError) as exc:
        ecr.upload_layer_part(
            repositoryName="app", uploadId="not-a-uuid", partFirstByte=0, partLastByte=0, layerPartBlob=b"x"
        )
    assert error_of(exc)[0] == "InvalidParameterException"


def test_upload_refused_past_image_size_limit(ecr, server):
    make_repo(server)
    server.registry.settings.max_image_size = 1000
    upload_id = ecr.initiate_layer_upload(repositoryName="app")["uploadId"]
    with pytest.raises(ClientError) as exc:
        ecr.upload_layer_part(
            repositoryName="app", uploadId=upload_id, partFirstByte=0, partLastByte=1999, layerPartBlob=b"x" * 2000
        )
    assert error_of(exc)[0] == "LimitExceededException"
    with pytest.raises(ClientError) as exc:  # nothing left behind
        ecr.upload_layer_part(
            repositoryName="app", uploadId=upload_id, partFirstByte=0, partLastByte=0, layerPartBlob=b"x"
        )
    assert error_of(exc)[0] == "UploadNotFoundException"


def test_batch_check_layer_availability(ecr, client, server):
    make_repo(server)
    make_repo(server, "other")
    push_blob(client, "app", b"here")
    push_blob(client, "other", b"elsewhere")
    out = ecr.batch_check_layer_availability(
        repositoryName="app",
        layerDigests=[sha256(b"here"), sha256(b"elsewhere"), "sha256:nothex", "", sha256(b"here")],
    )
    assert out["layers"] == [
        {"layerDigest": sha256(b"here"), "layerAvailability": "AVAILABLE", "layerSize": 4},
        {"layerDigest": sha256(b"elsewhere"), "layerAvailability": "UNAVAILABLE"},
    ]
    assert [(f["layerDigest"], f["failureCode"]) for f in out["failures"]] == [
        ("sha256:nothex", "InvalidLayerDigest"),
        ("", "MissingLayerDigest"),
    ]
    with pytest.raises(ClientError) as exc:
        ecr.batch_check_layer_availability(repositoryName="nope", layerDigests=[sha256(b"here")])
    assert error_of(exc)[0] == "RepositoryNotFoundException"
    status, body = raw_json(server, "BatchCheckLayerAvailability", {"repositoryName": "app", "layerDigests": []})
    assert status == 400 and body["__type"] == "InvalidParameterException"


def test_get_download_url_for_layer(ecr, client, server):
    make_repo(server)
    manifest = image_parts(client, "app", "dl")
    put(ecr, "app", manifest, "v1")
    layer = b"layer of dl"
    url = ecr.get_download_url_for_layer(repositoryName="app", layerDigest=sha256(layer))
    assert url["layerDigest"] == sha256(layer)
    r = httpx.get(url["downloadUrl"])  # no Authorization header
    assert r.status_code == 200 and r.content == layer
    assert r.headers["Docker-Content-Digest"] == sha256(layer)
    r = httpx.get(url["downloadUrl"], headers={"Range": "bytes=2-4"})
    assert r.status_code == 206 and r.content == layer[2:5]
    assert httpx.head(url["downloadUrl"]).headers["Content-Length"] == str(len(layer))
    tampered = url["downloadUrl"][:-3] + ("AAA" if not url["downloadUrl"].endswith("AAA") else "BBB")
    assert httpx.get(tampered).status_code == 403
    assert httpx.get(server.url + "/layers/garbage").status_code == 403
    # Each download of the URL is metered (here on the main listener): the whole layer and the range, not the HEAD,
    # the refusals or GetDownloadUrlForLayer itself
    assert _metered(server.registry, "app", 2) == (len(layer) + 3, 2)
    # Blob present but used by no image: LayerInaccessible. Absent: LayersNotFound.
    push_blob(client, "app", b"orphan")
    with pytest.raises(ClientError) as exc:
        ecr.get_download_url_for_layer(repositoryName="app", layerDigest=sha256(b"orphan"))
    assert error_of(exc)[0] == "LayerInaccessibleException"
    with pytest.raises(ClientError) as exc:
        ecr.get_download_url_for_layer(repositoryName="app", layerDigest=sha256(b"never"))
    assert error_of(exc)[0] == "LayersNotFoundException"
    with pytest.raises(ClientError) as exc:
        ecr.get_download_url_for_layer(repositoryName="app", layerDigest="sha256:XYZ")
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        ecr.get_download_url_for_layer(repositoryName="nope", layerDigest=sha256(layer))
    assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_presigned_url_expires_and_is_scoped(server):
    from soko.iam.layer_urls import URL_LIFETIME, InvalidLayerUrl, signer_for

    signer = signer_for(server.identity)
    token, expires = signer.token("000000000000", "app", sha256(b"x"), now=1000.0)
    assert expires == 1000.0 + URL_LIFETIME == 1000.0 + 20 * 60
    assert signer.verify(token, now=1000.0 + URL_LIFETIME - 1) == ("000000000000", "app", sha256(b"x"))
    with pytest.raises(InvalidLayerUrl):
        signer.verify(token, now=1000.0 + URL_LIFETIME + 1)
    _, _, mac = token.partition(".")
    forged = json.dumps({"a": "000000000000", "r": "other", "d": sha256(b"x"), "e": 9e12}).encode()
    import base64

    forged_payload = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    with pytest.raises(InvalidLayerUrl):
        signer.verify(f"{forged_payload}.{mac}", now=1000.0)
    assert hashlib.sha256(token.encode()).hexdigest()  # tokens are plain ASCII
    # A URL asked for on a VPC endpoint names it (its downloads are metered as that endpoint's); one asked for on the
    # public listener names none, as before
    private, _ = signer.token("000000000000", "app", sha256(b"x"), now=1000.0, endpoint="vpce-0abc1234")
    assert signer.grant(private, now=1000.0) == ("000000000000", "app", sha256(b"x"), "vpce-0abc1234")
    assert signer.verify(private, now=1000.0) == ("000000000000", "app", sha256(b"x"))
    assert signer.grant(token, now=1000.0).endpoint == "public" and '"v"' not in base64.urlsafe_b64decode(
        token.partition(".")[0] + "=="
    ).decode()
    payload, _, private_mac = private.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    moved = base64.urlsafe_b64encode(json.dumps({**claims, "v": "vpce-other"}).encode()).decode().rstrip("=")
    with pytest.raises(InvalidLayerUrl):
        signer.grant(f"{moved}.{private_mac}", now=1000.0)
