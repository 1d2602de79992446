"""Tag conditions end to end: boto3 and /v2/ against a running server (issue 11: a Deny on a tagged repository must
not fail open)."""

from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError
from tests.iam.test_api_roles import new_user
from tests.iam.test_api_users import ACCOUNT
from tests.oci.helpers import push_image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _denied(call) -> str:
    with pytest.raises(ClientError) as exc:
        call()
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException", exc.value.response
    return exc.value.response["Error"]["Message"]


def test_deny_on_resource_tag_blocks_ecr_and_v2(aws, server, client):
    root = aws("ecr")
    root.create_repository(repositoryName="prod-app", tags=[{"Key": "env", "Value": "prod"}])
    root.create_repository(repositoryName="dev-app")
    push_image(client, "prod-app", "v1")
    push_image(client, "dev-app", "v1")

    iam = aws("iam")
    policy = _policy(
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": "ecr:*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/env": "prod"}},
        },
        {
            "Effect": "Deny",
            "Action": ["ecr:TagResource", "ecr:CreateRepository"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestTag/env": "prod"}},
        },
    )
    ecr = aws("ecr", *new_user(iam, "ci", policy))

    image = [{"imageTag": "v1"}]
    message = _denied(lambda: ecr.batch_get_image(repositoryName="prod-app", imageIds=image))
    assert f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/prod-app" in message and "explicit deny" in message
    assert ecr.batch_get_image(repositoryName="dev-app", imageIds=image)["images"]

    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    headers = {"Authorization": f"Basic {token}", "Accept": OCI_MANIFEST}
    assert httpx.get(f"{server.url}/v2/prod-app/manifests/v1", headers=headers, timeout=30).status_code == 403
    assert httpx.get(f"{server.url}/v2/dev-app/manifests/v1", headers=headers, timeout=30).status_code == 200

    # aws:RequestTag: the user may tag and create, but not with env=prod (which would escape the Deny above).
    dev_arn = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/dev-app"
    _denied(lambda: ecr.tag_resource(resourceArn=dev_arn, tags=[{"Key": "env", "Value": "prod"}]))
    ecr.tag_resource(resourceArn=dev_arn, tags=[{"Key": "env", "Value": "dev"}])
    _denied(lambda: ecr.create_repository(repositoryName="new-app", tags=[{"Key": "env", "Value": "prod"}]))
    ecr.create_repository(repositoryName="new-app", tags=[{"Key": "env", "Value": "dev"}])

    # Tagging the repository prod (by root) takes effect on the next request.
    root.tag_resource(resourceArn=dev_arn, tags=[{"Key": "env", "Value": "prod"}])
    _denied(lambda: ecr.batch_get_image(repositoryName="dev-app", imageIds=image))
    assert httpx.get(f"{server.url}/v2/dev-app/manifests/v1", headers=headers, timeout=30).status_code == 403
