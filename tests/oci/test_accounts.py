"""Which account's registry a /v2/ request reaches: the bare host serves the caller's own account; the account host
``<account>.dkr.ecr.<region>.<domain>`` names another's (ECR's cross-account form).

skopeo cannot resolve ``*.localhost`` names here (neither glibc nor Go does without a hosts line), so these tests
set the Host header with an HTTP client; tests/e2e/test_identity.py drives skopeo through a hosts line.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.oci.helpers import assert_oci_error, push_image

ACCOUNT_A = "000000000000"
ACCOUNT_B = "111122223333"


@pytest.fixture
def b_client(server):
    key, _secret = server.identity.credentials.create_account(ACCOUNT_B)
    token, _ = server.identity.tokens.issue(key, server.registry.ctx.clock())
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Basic {token}"}) as c:
        yield c


def account_host(server, account: str) -> dict[str, str]:
    port = server.host.rsplit(":", 1)[1]
    return {"Host": f"{account}.dkr.ecr.us-east-1.localhost:{port}"}


def share_with_b(aws, name: str) -> None:
    text = json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"},
                       "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}],
    })
    aws("ecr").set_repository_policy(repositoryName=name, policyText=text)


def test_bare_host_serves_the_callers_own_account(client, b_client, server):
    digest_b, _ = push_image(b_client, "team/app", "v1", seed="b")
    assert b_client.get("/v2/team/app/manifests/v1").status_code == 200
    assert b_client.get("/v2/_catalog").json()["repositories"] == ["team/app"]
    # the same name in A's registry is another repository: A sees none of B's
    assert_oci_error(client.get("/v2/team/app/manifests/v1"), 404, "NAME_UNKNOWN")
    assert client.get("/v2/_catalog").json()["repositories"] == []
    digest_a, _ = push_image(client, "team/app", "v1", seed="a")
    assert digest_a != digest_b
    assert b_client.get("/v2/team/app/manifests/v1").headers["Docker-Content-Digest"] == digest_b
    # B's account host reaches the same registry for B
    by_name = b_client.get("/v2/team/app/manifests/v1", headers=account_host(server, ACCOUNT_B))
    assert by_name.headers["Docker-Content-Digest"] == digest_b


def test_cross_account_pull_through_the_account_host(client, b_client, server, aws):
    digest, _ = push_image(client, "shared/app", "v1", seed="shared")
    a_host = account_host(server, ACCOUNT_A)
    assert_oci_error(b_client.get("/v2/shared/app/manifests/v1", headers=a_host), 403, "DENIED")  # not shared yet
    share_with_b(aws, "shared/app")
    r = b_client.get("/v2/shared/app/manifests/v1", headers=a_host)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
    layer = json.loads(r.content)["layers"][0]["digest"]
    assert b_client.get(f"/v2/shared/app/blobs/{layer}", headers=a_host).status_code == 200
    # through the bare host B addresses its own registry, which has no such repository
    assert_oci_error(b_client.get("/v2/shared/app/manifests/v1"), 404, "NAME_UNKNOWN")
    # the policy grants pulls only
    pushed = b_client.post("/v2/shared/app/blobs/uploads/", headers=a_host)
    assert_oci_error(pushed, 403, "DENIED")


def test_proxy_endpoint_and_repository_uri(aws, server):
    key, secret = server.identity.credentials.create_account(ACCOUNT_B)
    ecr_b = aws("ecr", key_id=key, secret=secret)
    port = server.host.rsplit(":", 1)[1]
    data = ecr_b.get_authorization_token(registryIds=[ACCOUNT_B, ACCOUNT_A])["authorizationData"]
    assert [d["proxyEndpoint"] for d in data] == [
        f"http://{server.host}",  # B's own registry: the bare host it called
        f"http://{ACCOUNT_A}.dkr.ecr.us-east-1.localhost:{port}",
    ]
    repo = ecr_b.create_repository(repositoryName="team/app")["repository"]
    assert repo["repositoryUri"] == f"{ACCOUNT_B}.dkr.ecr.us-east-1.localhost:{port}/team/app"  # ECR's form
