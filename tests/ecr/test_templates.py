"""Repository creation templates over the ECR API, and CREATE_ON_PUSH: pushes (over /v2/) to missing repositories
create them with the longest-matching template's settings, tags, policy and lifecycle policy."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from tests.console.helpers import make_user
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


def test_kms_template_creates_kms_repositories_on_push(aws, ecr, client):
    """A template with encryptionType KMS: its key (an ARN: the service model allows no alias in templates) is
    checked as CreateRepository checks one; a repository created on push from it is bound to the key's ARN, its
    content sealed under the key; while the key is disabled, a push that would create one fails (KmsException /
    DENIED) and creates nothing."""
    kms = aws("kms")
    key = kms.create_key(Description="templates")["KeyMetadata"]
    encryption = {"encryptionType": "KMS", "kmsKey": key["Arn"]}
    created = ecr.create_repository_creation_template(
        prefix="team", appliedFor=["CREATE_ON_PUSH"], encryptionConfiguration=encryption
    )
    assert created["repositoryCreationTemplate"]["encryptionConfiguration"] == encryption
    ecr.create_repository_creation_template(
        prefix="dsse", appliedFor=["CREATE_ON_PUSH"], encryptionConfiguration={"encryptionType": "KMS_DSSE"}
    )
    push_image(client, "team/api", "v1", seed="kms-template")
    push_image(client, "dsse/api", "v1", seed="dsse-template")
    repo = ecr.describe_repositories(repositoryNames=["team/api"])["repositories"][0]
    assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key["Arn"]}
    dsse = ecr.describe_repositories(repositoryNames=["dsse/api"])["repositories"][0]["encryptionConfiguration"]
    managed = kms.describe_key(KeyId="alias/aws/ecr")["KeyMetadata"]["Arn"]  # KMS without kmsKey: aws/ecr
    assert dsse == {"encryptionType": "KMS_DSSE", "kmsKey": managed}
    images = ecr.batch_get_image(repositoryName="team/api", imageIds=[{"imageTag": "v1"}])["images"]
    assert len(images) == 1

    kms.disable_key(KeyId=key["KeyId"])
    r = client.post("/v2/team/other/blobs/uploads/")
    assert r.status_code == 403, r.text
    error = r.json()["errors"][0]
    assert error["code"] == "DENIED" and "DisabledException" in error["message"]
    with pytest.raises(ClientError) as exc:
        ecr.describe_repositories(repositoryNames=["team/other"])
    assert error_of(exc)[0] == "RepositoryNotFoundException"
    kms.enable_key(KeyId=key["KeyId"])
    push_image(client, "team/other", "v1", seed="kms-template-2")


def test_kms_template_hostile_input(aws, ecr):
    """Keys and roles that cannot be used are refused at CreateRepositoryCreationTemplate and
    UpdateRepositoryCreationTemplate, and nothing is stored (or changed)."""
    kms, iam = aws("kms"), aws("iam")
    key = kms.create_key()["KeyMetadata"]
    disabled = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=disabled["KeyId"])
    other_region = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{key['KeyId']}"
    bad_keys = {
        other_region: "NotFoundException",
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0c0ffee0-0000-4000-8000-000000000000": "NotFoundException",
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/not-a-uuid": "NotFoundException",
        "arn:aws:kms:us-east-1:111111111111:key/" + key["KeyId"]: "NotFoundException",  # another account's
        disabled["Arn"]: "DisabledException",
    }
    for bad, kms_error in bad_keys.items():
        with pytest.raises(ClientError) as exc:
            ecr.create_repository_creation_template(
                prefix="hostile",
                appliedFor=["CREATE_ON_PUSH"],
                encryptionConfiguration={"encryptionType": "KMS", "kmsKey": bad},
            )
        code, message = error_of(exc)
        assert code == "KmsException" and kms_error in message, (bad[:60], message)
        assert exc.value.response["kmsError"] == kms_error
    for encryption in (
        {"encryptionType": "AES256", "kmsKey": key["Arn"]},  # a key with AES256
        {"encryptionType": "KMS", "kmsKey": "alias/aws/ecr"},  # not an ARN: the model's pattern
        {"encryptionType": "KMS", "kmsKey": key["Arn"] + "x" * 2048},
    ):
        with pytest.raises(ClientError) as exc:
            ecr.create_repository_creation_template(
                prefix="hostile", appliedFor=["CREATE_ON_PUSH"], encryptionConfiguration=encryption
            )
        assert error_of(exc)[0] == "InvalidParameterException"
    roles = {
        "arn:aws:iam::111111111111:role/elsewhere": "must be in the registry's account",
        f"arn:aws:iam::{ACCOUNT}:role/missing": "cannot be found",
        f"arn:aws:iam::{ACCOUNT}:user/alice": "is invalid",
        "arn:aws:iam::" + "9" * 12 + ":role/" + "r" * 64: "",
    }
    for role, said in roles.items():
        with pytest.raises(ClientError) as exc:
            ecr.create_repository_creation_template(
                prefix="hostile",
                appliedFor=["CREATE_ON_PUSH"],
                encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key["Arn"]},
                customRoleArn=role,
            )
        code, message = error_of(exc)
        assert code == "InvalidParameterException" and said in message, message
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []

    # the custom role is who must be allowed to use the key (its policies; the default key policy defers to IAM)
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecr.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName="ecr-templates", AssumeRolePolicyDocument=json.dumps(trust))
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/ecr-templates"
    kwargs = {
        "prefix": "role",
        "appliedFor": ["CREATE_ON_PUSH"],
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": key["Arn"]},
        "customRoleArn": role_arn,
    }
    with pytest.raises(ClientError) as exc:
        ecr.create_repository_creation_template(**kwargs)
    assert error_of(exc)[0] == "KmsException" and exc.value.response["kmsError"] == "AccessDeniedException"
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
    iam.put_role_policy(RoleName="ecr-templates", PolicyName="kms", PolicyDocument=json.dumps(allow))
    stored = ecr.create_repository_creation_template(**kwargs)["repositoryCreationTemplate"]
    assert stored["customRoleArn"] == role_arn

    # an update to a key that cannot be used changes nothing; an update of anything else does not re-check it
    with pytest.raises(ClientError) as exc:
        ecr.update_repository_creation_template(
            prefix="role", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": disabled["Arn"]}
        )
    assert error_of(exc)[0] == "KmsException"
    kms.disable_key(KeyId=key["KeyId"])
    updated = ecr.update_repository_creation_template(prefix="role", description="d")["repositoryCreationTemplate"]
    assert updated["encryptionConfiguration"] == kwargs["encryptionConfiguration"] and updated["description"] == "d"


def test_a_custom_role_is_passed_only_by_a_caller_allowed_to_pass_it(aws, ecr):
    """As in ECR, naming a customRoleArn needs iam:PassRole on it: the key is checked in the role's name, so a caller
    not allowed to use a key would otherwise have repositories made under it through any role of the account that
    may."""
    kms, iam = aws("kms"), aws("iam")
    key = kms.create_key()["KeyMetadata"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecr.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName="key-user", AssumeRolePolicyDocument=json.dumps(trust))
    allow_kms = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
    iam.put_role_policy(RoleName="key-user", PolicyName="kms", PolicyDocument=json.dumps(allow_kms))
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/key-user"
    ecr_only = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
    key_id, secret = make_user(iam, "templater", ecr_only)
    templater = aws("ecr", key_id, secret)
    kwargs = {
        "appliedFor": ["CREATE_ON_PUSH"],
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": key["Arn"]},
        "customRoleArn": role_arn,
    }
    with pytest.raises(ClientError) as exc:
        templater.create_repository_creation_template(prefix="passed", **kwargs)
    assert error_of(exc)[0] == "AccessDeniedException" and "iam:PassRole" in error_of(exc)[1]
    ecr.create_repository_creation_template(prefix="other", appliedFor=["CREATE_ON_PUSH"])
    with pytest.raises(ClientError) as exc:
        templater.update_repository_creation_template(prefix="other", **kwargs)
    assert error_of(exc)[0] == "AccessDeniedException"
    assert [t["prefix"] for t in ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]] == [
        "other"
    ]
    passing = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": role_arn}
    policy = {**ecr_only, "Statement": [*ecr_only["Statement"], passing]}
    iam.put_user_policy(UserName="templater", PolicyName="console", PolicyDocument=json.dumps(policy))
    stored = templater.create_repository_creation_template(prefix="passed", **kwargs)["repositoryCreationTemplate"]
    assert stored["customRoleArn"] == role_arn


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
