"""Raw requests for the bad-input tests and the fuzzer: SigV4-signed bodies of any bytes (botocore's signer, no
parameter validation) for the ECR JSON and IAM Query APIs, and plain /v2/ requests with ECR Basic credentials."""

from __future__ import annotations

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import ROOT_KEY_ID, ROOT_SECRET

ECR_PREFIX = "AmazonEC2ContainerRegistry_V20150921."


def signed(url: str, service: str, body: bytes, headers: dict[str, str]) -> tuple[str, dict[str, str], bytes]:
    request = AWSRequest(method="POST", url=url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), service, "us-east-1").add_auth(request)
    return request.url, dict(request.headers.items()), body


def ecr_call(client: httpx.Client, url: str, operation: str, body: bytes) -> httpx.Response:
    headers = {"X-Amz-Target": ECR_PREFIX + operation, "Content-Type": "application/x-amz-json-1.1"}
    target, signed_headers, content = signed(url, "ecr", body, headers)
    return client.post(target, headers=signed_headers, content=content)


def query_call(client: httpx.Client, url: str, service: str, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    target, signed_headers, content = signed(url, service, body, headers)
    return client.post(target, headers=signed_headers, content=content)
