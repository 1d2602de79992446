"""Sign requests the way real clients do (botocore itself) and turn them into what the HTTP layer hands in."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
from botocore.auth import SigV4Auth, SigV4QueryAuth, _host_from_url
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from soko.aws.sigv4 import Credentials, SignedRequest

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TEMP_AKID = "ASIAIOSFODNN7EXAMPLE"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKEN//////////wEaDA=="
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

KEYS = {
    AKID: Credentials(AKID, SECRET),
    TEMP_AKID: Credentials(TEMP_AKID, SECRET, TOKEN),
}


def lookup(key_id: str) -> Credentials | None:
    return KEYS.get(key_id)


@contextmanager
def frozen(when: datetime) -> Iterator[None]:
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        yield


def to_signed(prepared: AWSPreparedRequest | AWSRequest, *, with_host_header: bool = True) -> SignedRequest:
    """What the server would hand the verifier for this request: raw path/query, str headers, body hash, Host."""
    parts = urlsplit(prepared.url)
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in prepared.headers.items()}
    host = _host_from_url(prepared.url)
    if with_host_header:
        headers["Host"] = host  # urllib3 sends exactly this
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    return SignedRequest(
        method=prepared.method,
        path=parts.path or "/",
        query=parts.query,
        headers=headers,
        body_sha256=hashlib.sha256(body).hexdigest(),
        host="" if with_host_header else host,
    )


def sign(
    method: str = "POST",
    url: str = "https://api.ecr.us-east-1.amazonaws.com/",
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b'{"repositoryNames":["a"]}',
    key: str = AKID,
    secret: str = SECRET,
    token: str | None = None,
    service: str = "ecr",
    region: str = "us-east-1",
    when: datetime = NOW,
) -> AWSRequest:
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers=headers
        or {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        },
    )
    with frozen(when):
        SigV4Auth(BotoCredentials(key, secret, token), service, region).add_auth(request)
    return request


def presign(
    url: str,
    *,
    expires: int = 3600,
    key: str = AKID,
    token: str | None = None,
    service: str = "sts",
    region: str = "us-east-1",
    when: datetime = NOW,
    headers: dict[str, str] | None = None,
) -> AWSRequest:
    request = AWSRequest(method="GET", url=url, headers=headers or {})
    with frozen(when):
        SigV4QueryAuth(BotoCredentials(key, SECRET, token), service, region, expires=expires).add_auth(request)
    return request


class _Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        self.request = request


def capture(service: str, operation: str, params: dict[str, Any], **client_kwargs: Any) -> AWSPreparedRequest:
    """The exact request a boto3 client would put on the wire, stopped in `before-send` (no network)."""
    kwargs = {
        "region_name": "us-east-1",
        "aws_access_key_id": AKID,
        "aws_secret_access_key": SECRET,
        **client_kwargs,
    }
    client = boto3.session.Session().client(service, **kwargs)

    def stop(request: AWSPreparedRequest, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register("before-send", stop)
    try:
        getattr(client, operation)(**params)
    except _Captured as captured:
        return captured.request
    raise AssertionError("request was not sent")
