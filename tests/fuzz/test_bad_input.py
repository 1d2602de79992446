"""Inputs that once answered 500 (issue 11): each now gets its protocol's 4xx, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fuzz.wire import ecr_call, query_call
from tests.oci.helpers import (
    OCI_MANIFEST,
    assert_oci_error,
    image_manifest,
    push_blob,
    push_image,
    sha256,
    start_upload,
)

NESTED = b"[" * 100_000 + b"]" * 100_000
DIGITS = "9" * 5000


@pytest.fixture
def raw(server):
    with httpx.Client(timeout=30) as c:
        yield c


def _aws_error(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    return response.json()["__type"]


def test_deeply_nested_json(server, raw) -> None:
    assert _aws_error(ecr_call(raw, server.url, "DescribeRepositories", NESTED)) == "SerializationException"
    deep_policy = '{"Version":"2012-10-17","Statement":' + "[" * 3000 + "]" * 3000 + "}"
    body = httpx.QueryParams(
        {"Action": "CreatePolicy", "Version": "2010-05-08", "PolicyName": "p", "PolicyDocument": deep_policy}
    )
    response = query_call(raw, server.url, "iam", str(body).encode())
    assert response.status_code == 400 and b"MalformedPolicyDocument" in response.content, response.text[:400]


def test_lone_surrogate_in_an_ecr_parameter(server, raw) -> None:
    body = b'{"repositoryName": "\\ud800"}'
    assert _aws_error(ecr_call(raw, server.url, "CreateRepository", body)) == "SerializationException"
    body = b'{"repositoryNames": ["a\\udfff"]}'
    assert _aws_error(ecr_call(raw, server.url, "DescribeRepositories", body)) == "SerializationException"


def test_numbers_past_the_integer_conversion_limit(server, raw, client) -> None:
    body = f"Action=ListUsers&Version=2010-05-08&MaxItems={DIGITS}".encode()
    response = query_call(raw, server.url, "iam", body)
    assert response.status_code == 400 and b"InvalidParameterValue" in response.content, response.text[:300]
    digest = push_blob(client, "big/numbers", b"some content")
    response = client.get(f"/v2/big/numbers/blobs/{digest}", headers={"Range": f"bytes={DIGITS}-"})
    assert_oci_error(response, 416)
    response = client.get(f"/v2/big/numbers/blobs/{digest}", headers={"Range": f"bytes=0-{DIGITS}"})
    assert response.status_code == 206 and response.content == b"some content"
    location = start_upload(client, "big/numbers")
    response = client.patch(location, content=b"abc", headers={"Content-Range": f"0-{DIGITS}"})
    assert_oci_error(response, 416)
    response = client.patch(location, content=b"abc", headers={"Content-Range": f"{DIGITS}-{DIGITS}"})
    assert_oci_error(response, 416)


def test_a_manifest_annotation_with_a_lone_surrogate_is_refused(server, raw, client) -> None:
    _, subject = push_image(client, "sur/rogate", "v1")
    referrer = image_manifest(b"{}", [b"layer 0 of x"], config_type="application/vnd.example+json")
    push_blob(client, "sur/rogate", b"{}")
    referrer["subject"] = {"mediaType": OCI_MANIFEST, "digest": sha256(subject), "size": len(subject)}
    text = json.dumps(referrer)[:-1] + ', "annotations": {"note": "\\ud800"}}'
    response = client.put(
        f"/v2/sur/rogate/manifests/{sha256(text.encode())}",
        content=text.encode(),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert_oci_error(response, 400, "MANIFEST_INVALID")
    listed = ecr_call(
        raw,
        server.url,
        "ListImageReferrers",
        json.dumps({"repositoryName": "sur/rogate", "subjectId": {"imageDigest": sha256(subject)}}).encode(),
    )
    assert listed.status_code == 200 and listed.json()["referrers"] == []
