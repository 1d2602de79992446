"""The audit log keeps which access key was tried, never the Authorization header, signature or token."""

from __future__ import annotations

import time

import httpx

from soko.audit import AuditQuery
from tests.conftest import ROOT_KEY_ID

SIGNATURE = "f" * 64


def _denials(server, expected: int) -> list[str]:
    """The authn denials, once ``expected`` of them are recorded: a request's audit record may be added just after
    its response reached the client, so flush and look again for a while rather than once."""
    audit = server.identity.audit
    deadline = time.monotonic() + 10
    while True:
        audit.flush()
        reasons = [e["reason"] for e in audit.query(AuditQuery(decision="deny")) if e["event"] == "authn"]
        if len(reasons) >= expected or time.monotonic() > deadline:
            return reasons
        time.sleep(0.05)


def test_incomplete_signature_reasons_name_the_key_not_the_header(server) -> None:
    headers = {
        "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        "Content-Type": "application/x-amz-json-1.1",
        # no date header: IncompleteSignature, whose message echoes the whole header back to the client
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ROOT_KEY_ID}/20260101/us-east-1/ecr/aws4_request, "
        f"SignedHeaders=host, Signature={SIGNATURE}",
        "X-Amz-Security-Token": "secret-session-token",
    }
    response = httpx.post(server.url + "/", headers=headers, content=b"{}")
    assert response.status_code == 400 and response.json()["__type"] == "IncompleteSignatureException"
    # IAM (Query) with a wrong signature, and a presigned query string
    httpx.post(
        server.url + "/",
        headers={**headers, "X-Amz-Target": "", "X-Amz-Date": "20260101T000000Z"},
        content=b"Action=ListUsers&Version=2010-05-08",
    )
    query = (
        f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ROOT_KEY_ID}%2F20260101%2Fus-east-1%2Fiam%2Faws4_request"
        f"&X-Amz-Date=20260101T000000Z&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
    )
    httpx.post(f"{server.url}/?{query}", content=b"Action=ListUsers&Version=2010-05-08")
    reasons = _denials(server, 3)
    assert len(reasons) == 3
    for reason in reasons:
        assert SIGNATURE not in reason and "secret-session-token" not in reason and "Authorization" not in reason
        assert f"access key {ROOT_KEY_ID}" in reason
