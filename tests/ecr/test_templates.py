"""Repository creation templates over the ECR API, and CREATE_ON_PUSH: pushes (over /v2/) to missing repositories
create them with the longest-matching template's settings, tags, policy and lifecycle policy."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from tests.ecr.test_repositories import error_of
from tests.oci.helpers import push_blob, push_image

ACCOUNT = "000000000000"
LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "keep 5",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
                "action": {"type": "expire"},
            }
        ]
    }
)
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "pull",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
                "Action": "ecr:BatchGetImage",
            }
        ],
    }
)
@pytest.fixture
def ecr(aws):
    return aws("ecr")


def test_template_crud(ecr):
    created = ecr.create_repository_creation_template(
        prefix="prod",
        description="production",
        appliedFor=["CREATE_ON_PUSH"],
        imageTagMutability="IMMUTABLE",
        resourceTags=[{"Key": "env", "Value": "prod"}],
        repositoryPolicy=POLICY,
        lifecyclePolicy=LIFECYCLE,
        encryptionConfiguration={"encryptionType": "AES256"},
    )
    assert created["registryId"] == ACCOUNT
    template = created["repositoryCreationTemplate"]
    assert template["prefix"] == "prod" and template["appliedFor"] == ["CREATE_ON_PUSH"]
    assert template["imageTagMutability"] == "IMMUTABLE"
    assert template["repositoryPolicy"] == POLICY and template["lifecyclePolicy"] == LIFECYCLE
    assert template["createdAt"] and template["updatedAt"]
    with pytest.raises(ClientError) as exc:
        ecr.create_repository_creation_template(prefix="prod", appliedFor=["CREATE_ON_PUSH"])
    assert error_of(exc)[0] == "TemplateAlreadyExistsException"
    updated = ecr.update_repository_creation_template(prefix="prod", imageTagMutability="MUTABLE", description="p")
    t = updated["repositoryCreationTemplate"]
    assert t["imageTagMutability"] == "MUTABLE" and t["description"] == "p" and t["repositoryPolicy"] == POLICY
    ecr.create_repository_creation_template(prefix="ROOT", appliedFor=["CREATE_ON_PUSH"])
    listed = ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]
    assert [x["prefix"] for x in listed] == ["ROOT", "prod"]
    only = ecr.describe_repository_creation_templates(prefixes=["prod", "nope"])["repositoryCreationTemplates"]
    assert [x["prefix"] for x in only] == ["prod"]
    pages = ecr.get_paginator("describe_repository_creation_templates").paginate(PaginationConfig={"PageSize": 1})
    assert [x["prefix"] for p in pages for x in p["repositoryCreationTemplates"]] == ["ROOT", "prod"]
    deleted = ecr.delete_repository_creation_template(prefix="prod")["repositoryCreationTemplate"]
    assert deleted["prefix"] == "prod"
    for call in (
        lambda: ecr.delete_repository_creation_template(prefix="prod"),
        lambda: ecr.update_repository_creation_template(prefix="prod", description="x"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc)[0] == "TemplateNotFoundException"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"appliedFor": ["CREATE_ON_PUSH"], "encryptionConfiguration": {"encryptionType": "KMS"}},
    ],
    ids=["kms"],
)
def test_template_refused_when_it_cannot_be_carried_out(ecr, kwargs):
    with pytest.raises(ClientError) as exc:
        ecr.create_repository_creation_template(prefix="later", **kwargs)
    code, message = error_of(exc)
    assert code == "UnsupportedOperationException" and "cannot be carried out" in message
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"appliedFor": []},
        {"appliedFor": ["CREATE_ON_PUSH"], "repositoryPolicy": "{nope"},
        {"appliedFor": ["CREATE_ON_PUSH"], "lifecyclePolicy": json.dumps({"rules": []})},
        {"appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"},
        {"appliedFor": ["CREATE_ON_PUSH"], "resourceTags": [{"Key": "aws:x", "Value": "y"}]},
    ],
)
def test_template_validation(ecr, kwargs):
    with pytest.raises(ClientError) as exc:
        ecr.create_repository_creation_template(prefix="bad", **kwargs)
    assert error_of(exc)[0] in ("InvalidParameterException", "InvalidTagParameterException")
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []


def test_template_lifecycle_message(ecr):
    with pytest.raises(ClientError) as exc:
        ecr.create_repository_creation_template(
            prefix="lc", appliedFor=["CREATE_ON_PUSH"], lifecyclePolicy=json.dumps({"rules": [{"rulePriority": 0}]})
        )
    code, message = error_of(exc)
    assert code == "InvalidParameterException"
    assert message.startswith("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle")


def test_create_on_push_applies_longest_template(ecr, client, server):
    ecr.create_repository_creation_template(
        prefix="ROOT", appliedFor=["CREATE_ON_PUSH"], resourceTags=[{"Key": "from", "Value": "root"}]
    )
    ecr.create_repository_creation_template(
        prefix="prod/",
        appliedFor=["CREATE_ON_PUSH"],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest"}],
        resourceTags=[{"Key": "from", "Value": "prod"}],
        repositoryPolicy=POLICY,
        lifecyclePolicy=LIFECYCLE,
        encryptionConfiguration={"encryptionType": "AES256"},
    )
    push_image(client, "prod/replicated/api", "v1", seed="p")
    repo = ecr.describe_repositories(repositoryNames=["prod/replicated/api"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"  # the longest prefix, not ROOT
    assert repo["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest"}]
    assert repo["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"] == [{"Key": "from", "Value": "prod"}]
    assert ecr.get_repository_policy(repositoryName="prod/replicated/api")["policyText"] == POLICY
    from soko.meta.schema import lifecycle_policies

    with server.registry.ctx.db.read() as conn:
        texts = conn.execute(sa.select(lifecycle_policies.c.policy_text)).scalars().all()
    assert texts == [LIFECYCLE]
    # The template's immutability is enforced on the next push.
    from tests.oci.helpers import image_manifest, put_manifest

    r = put_manifest(client, "prod/replicated/api", "v1", image_manifest(b"{}", []))
    assert r.status_code in (400, 403), r.text
    # "production" is not under the "prod/" namespace: ROOT applies.
    push_blob(client, "production", b"x")
    tags = ecr.list_tags_for_resource(resourceArn=f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/production")["tags"]
    assert tags == [{"Key": "from", "Value": "root"}]
    assert (
        ecr.describe_repositories(repositoryNames=["production"])["repositories"][0]["imageTagMutability"] == "MUTABLE"
    )


def test_no_template_and_create_on_push_off_is_name_unknown(ecr, client, server):
    server.registry.settings.create_repository_on_push = False
    r = client.post("/v2/nowhere/blobs/uploads/")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    ecr.create_repository_creation_template(prefix="team", appliedFor=["CREATE_ON_PUSH"])
    r = client.post("/v2/team/svc/blobs/uploads/")
    assert r.status_code == 202, r.text
    assert ecr.describe_repositories(repositoryNames=["team/svc"])["repositories"]
    r = client.post("/v2/elsewhere/blobs/uploads/")
    assert r.status_code == 404


def test_cli_templates(aws_cli):
    code, out, err = aws_cli(
        "ecr", "create-repository-creation-template", "--prefix", "cli", "--applied-for", "CREATE_ON_PUSH"
    )
    assert code == 0, err
    assert out["repositoryCreationTemplate"]["prefix"] == "cli"
    code, out, err = aws_cli("ecr", "describe-repository-creation-templates")
    assert code == 0 and [t["prefix"] for t in out["repositoryCreationTemplates"]] == ["cli"], err
    code, out, err = aws_cli("ecr", "delete-repository-creation-template", "--prefix", "nope")
    assert code != 0 and "TemplateNotFoundException" in err
