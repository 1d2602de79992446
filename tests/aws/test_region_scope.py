"""A deployment serves one region: requests whose SigV4 credential scope names another region are refused as AWS
refuses them, on the ECR API (including GetAuthorizationToken, the token path) and on IAM/STS — where AWS's global
signing region us-east-1 is accepted too (IAM is a global service; STS's global endpoint signs as us-east-1)."""

from __future__ import annotations

import dataclasses

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import ROOT_KEY_ID, ROOT_SECRET, SUITE_RETRIES, serve


def _client(url: str, service: str, region: str):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=ROOT_KEY_ID,
        aws_secret_access_key=ROOT_SECRET,
        config=Config(retries=SUITE_RETRIES),
    )


def _error(call) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as exc:
        call()
    response = exc.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def eu_server(registry, settings):
    """The same registry served as an eu-west-1 deployment."""
    with serve(dataclasses.replace(settings, region="eu-west-1"), registry) as server:
        yield server.url


def test_ecr_and_token_requests_signed_for_another_region_are_refused(server):
    wrong = _client(server.url, "ecr", "us-west-2")
    for call in (wrong.describe_repositories, wrong.get_authorization_token):
        code, message, status = _error(call)
        assert (code, status) == ("InvalidSignatureException", 400)
        assert message == "Credential should be scoped to a valid region, not 'us-west-2'. "
    right = _client(server.url, "ecr", "us-east-1")
    assert right.describe_repositories()["repositories"] == []
    assert right.get_authorization_token()["authorizationData"]


def test_ecr_request_scoped_to_another_service_is_refused(server):
    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=b"{}",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        },
    )
    SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "s3", "us-east-1").add_auth(request)
    r = httpx.post(server.url + "/", content=b"{}", headers=dict(request.headers), timeout=30)
    assert r.status_code == 400
    assert r.json()["__type"] == "InvalidSignatureException"
    assert r.json()["message"].startswith("Credential should be scoped to correct service: 'ecr'.")


def test_iam_and_sts_accept_the_deployment_region_and_the_global_one_only(eu_server):
    for region in ("eu-west-1", "us-east-1"):  # the deployment's, and AWS's global signing region
        assert _client(eu_server, "iam", region).get_user()["User"]["Arn"].endswith(":root")
        assert _client(eu_server, "sts", region).get_caller_identity()["Account"]
    for service, call in (("iam", "get_user"), ("sts", "get_caller_identity")):
        code, message, status = _error(getattr(_client(eu_server, service, "us-west-2"), call))
        assert (code, status) == ("SignatureDoesNotMatch", 403), service
        assert message == "Credential should be scoped to a valid region, not 'us-west-2'. "
    # ECR is regional: only the deployment's region.
    assert _client(eu_server, "ecr", "eu-west-1").describe_repositories()["repositories"] == []
    code, message, _ = _error(_client(eu_server, "ecr", "us-east-1").describe_repositories)
    assert code == "InvalidSignatureException"
    assert message == "Credential should be scoped to a valid region, not 'us-east-1'. "
