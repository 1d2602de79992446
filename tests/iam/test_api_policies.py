"""Inline and managed IAM policies: documents validated on write, size quotas, attachments."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from tests.iam.test_api_users import ACCOUNT, error

ALLOW_ECR = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
TRUST_ACCOUNT = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}
    ],
}


def padded(statements: int) -> str:
    """An identity policy of roughly 90 non-whitespace characters per statement."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": f"S{i}", "Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": f"arn:aws:ecr:*:*:x{i}"}
                for i in range(statements)
            ],
        }
    )


@pytest.mark.parametrize("kind", ["user", "role"])
def test_inline_policy_lifecycle(aws, kind):
    iam = aws("iam")
    if kind == "user":
        iam.create_user(UserName="p1")
        who = {"UserName": "p1"}
        put, get, lst, delete = iam.put_user_policy, iam.get_user_policy, iam.list_user_policies, iam.delete_user_policy
    else:
        iam.create_role(RoleName="p1", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))
        who = {"RoleName": "p1"}
        put, get, lst, delete = iam.put_role_policy, iam.get_role_policy, iam.list_role_policies, iam.delete_role_policy
    put(**who, PolicyName="b", PolicyDocument=json.dumps(ALLOW_ECR))
    put(**who, PolicyName="a", PolicyDocument=json.dumps(ALLOW_ECR))
    got = get(**who, PolicyName="b")
    assert got["PolicyName"] == "b"
    assert got["PolicyDocument"] == ALLOW_ECR  # boto3 decodes IAM's URL-encoded document
    assert got[next(iter(who))] == "p1"
    assert lst(**who)["PolicyNames"] == ["a", "b"]

    replaced = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "ecr:*", "Resource": "*"}]}
    put(**who, PolicyName="b", PolicyDocument=json.dumps(replaced))
    assert get(**who, PolicyName="b")["PolicyDocument"] == replaced
    assert lst(**who)["PolicyNames"] == ["a", "b"]

    delete(**who, PolicyName="b")
    assert lst(**who)["PolicyNames"] == ["a"]
    with pytest.raises(ClientError) as exc:
        get(**who, PolicyName="b")
    assert error(exc) == ("NoSuchEntity", f"The {kind} policy with name b cannot be found.", 404)
    with pytest.raises(ClientError) as exc:
        delete(**who, PolicyName="b")
    assert error(exc)[0] == "NoSuchEntity"
    other = {next(iter(who)): "nobody"}
    with pytest.raises(ClientError) as exc:
        put(**other, PolicyName="b", PolicyDocument=json.dumps(ALLOW_ECR))
    assert error(exc) == ("NoSuchEntity", f"The {kind} with name nobody cannot be found.", 404)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"Version":"2012-10-17"}', "Statement"),
        ('{"Version":"2012-10-17","Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}', "Effect"),
        ('{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":5,"Resource":"*"}}', "Action"),
        ('{"Version":"1999-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}', "Version"),
        (
            '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}',
            "rincipal",
        ),
    ],
)
def test_malformed_documents_are_refused(aws, document, fragment):
    iam = aws("iam")
    iam.create_user(UserName="m")
    for call in (
        lambda: iam.put_user_policy(UserName="m", PolicyName="p", PolicyDocument=document),
        lambda: iam.create_policy(PolicyName="p", PolicyDocument=document),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        code, message, status = error(exc)
        assert (code, status) == ("MalformedPolicyDocument", 400)
        assert fragment in message
    assert iam.list_user_policies(UserName="m")["PolicyNames"] == []
    assert iam.list_policies(Scope="Local")["Policies"] == []


def test_policy_size_quotas(aws):
    iam = aws("iam")
    iam.create_user(UserName="big")
    with pytest.raises(ClientError) as exc:
        iam.put_user_policy(UserName="big", PolicyName="p", PolicyDocument=padded(40))
    assert error(exc) == ("LimitExceeded", "Maximum policy size of 2048 bytes exceeded for user big", 409)
    # Whitespace does not count.
    spaced = json.dumps(json.loads(padded(15)), indent=8)
    assert len(spaced) > 2048
    iam.put_user_policy(UserName="big", PolicyName="p", PolicyDocument=spaced)
    # The quota is for all of a user's inline policies together.
    with pytest.raises(ClientError) as exc:
        iam.put_user_policy(UserName="big", PolicyName="q", PolicyDocument=padded(15))
    assert error(exc)[0] == "LimitExceeded"

    iam.create_role(RoleName="big", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))
    iam.put_role_policy(RoleName="big", PolicyName="p", PolicyDocument=padded(40))  # roles get 10,240
    with pytest.raises(ClientError) as exc:
        iam.put_role_policy(RoleName="big", PolicyName="q", PolicyDocument=padded(100))
    assert error(exc) == ("LimitExceeded", "Maximum policy size of 10240 bytes exceeded for role big", 409)

    iam.create_policy(PolicyName="mid", PolicyDocument=padded(40))  # managed: 6,144
    with pytest.raises(ClientError) as exc:
        iam.create_policy(PolicyName="huge", PolicyDocument=padded(80))
    assert error(exc) == ("LimitExceeded", "Cannot exceed quota for PolicySize: 6144", 409)
    with pytest.raises(ClientError) as exc:  # beyond the model's 131,072 characters
        iam.create_policy(PolicyName="huger", PolicyDocument=" " * 140_000)
    assert error(exc)[0] == "ValidationError"


def test_managed_policy_lifecycle(aws):
    iam = aws("iam")
    created = iam.create_policy(
        PolicyName="pull", Path="/ci/", PolicyDocument=json.dumps(ALLOW_ECR), Description="pull images"
    )["Policy"]
    arn = f"arn:aws:iam::{ACCOUNT}:policy/ci/pull"
    assert created["Arn"] == arn
    assert created["PolicyId"].startswith("ANPA")
    assert created["DefaultVersionId"] == "v1"
    assert created["AttachmentCount"] == 0
    assert created["IsAttachable"] is True

    got = iam.get_policy(PolicyArn=arn)["Policy"]
    assert got["PolicyName"] == "pull" and got["Description"] == "pull images"
    version = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert version["Document"] == ALLOW_ECR and version["IsDefaultVersion"] is True
    with pytest.raises(ClientError) as exc:
        iam.get_policy_version(PolicyArn=arn, VersionId="v2")
    assert error(exc)[0] == "NoSuchEntity"

    with pytest.raises(ClientError) as exc:
        iam.create_policy(PolicyName="pull", PolicyDocument=json.dumps(ALLOW_ECR))
    assert error(exc) == (
        "EntityAlreadyExists",
        "A policy called pull already exists. Duplicate names are not allowed.",
        409,
    )
    iam.create_policy(PolicyName="push", PolicyDocument=json.dumps(ALLOW_ECR))
    assert [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]] == ["pull", "push"]
    assert iam.list_policies(Scope="AWS")["Policies"] == []
    assert [p["PolicyName"] for p in iam.list_policies(PathPrefix="/ci/")["Policies"]] == ["pull"]

    iam.create_user(UserName="ci")
    iam.attach_user_policy(UserName="ci", PolicyArn=arn)
    iam.attach_user_policy(UserName="ci", PolicyArn=arn)  # idempotent, like IAM
    attached = iam.list_attached_user_policies(UserName="ci")["AttachedPolicies"]
    assert attached == [{"PolicyName": "pull", "PolicyArn": arn}]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1
    assert [p["PolicyName"] for p in iam.list_policies(OnlyAttached=True)["Policies"]] == ["pull"]

    with pytest.raises(ClientError) as exc:
        iam.delete_policy(PolicyArn=arn)
    assert error(exc) == ("DeleteConflict", "Cannot delete a policy attached to entities.", 409)
    iam.detach_user_policy(UserName="ci", PolicyArn=arn)
    with pytest.raises(ClientError) as exc:
        iam.detach_user_policy(UserName="ci", PolicyArn=arn)
    assert error(exc) == ("NoSuchEntity", f"Policy {arn} was not found.", 404)
    iam.delete_policy(PolicyArn=arn)
    with pytest.raises(ClientError) as exc:
        iam.get_policy(PolicyArn=arn)
    assert error(exc) == ("NoSuchEntity", f"Policy {arn} does not exist or is not attachable.", 404)


def test_attach_errors_and_role_attachments(aws):
    iam = aws("iam")
    iam.create_role(RoleName="builder", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))
    missing = f"arn:aws:iam::{ACCOUNT}:policy/missing"
    with pytest.raises(ClientError) as exc:
        iam.attach_role_policy(RoleName="builder", PolicyArn=missing)
    assert error(exc) == ("NoSuchEntity", f"Policy {missing} does not exist or is not attachable.", 404)
    with pytest.raises(ClientError) as exc:
        iam.attach_role_policy(RoleName="builder", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    assert error(exc)[0] == "NoSuchEntity"
    with pytest.raises(ClientError) as exc:
        iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    assert error(exc)[0] == "NoSuchEntity"
    with pytest.raises(ClientError) as exc:
        iam.attach_role_policy(RoleName="builder", PolicyArn="arn:aws:s3:::not-a-policy-at-all")
    assert error(exc) == ("InvalidInput", "ARN arn:aws:s3:::not-a-policy-at-all is not valid.", 400)
    arn = iam.create_policy(PolicyName="p0", PolicyDocument=json.dumps(ALLOW_ECR))["Policy"]["Arn"]
    with pytest.raises(ClientError) as exc:
        iam.attach_role_policy(RoleName="nobody", PolicyArn=arn)
    assert error(exc) == ("NoSuchEntity", "The role with name nobody cannot be found.", 404)

    arns = [arn] + [
        iam.create_policy(PolicyName=f"p{i}", PolicyDocument=json.dumps(ALLOW_ECR))["Policy"]["Arn"]
        for i in range(1, 11)
    ]
    for a in arns[:10]:
        iam.attach_role_policy(RoleName="builder", PolicyArn=a)
    with pytest.raises(ClientError) as exc:
        iam.attach_role_policy(RoleName="builder", PolicyArn=arns[10])
    assert error(exc) == ("LimitExceeded", "Cannot exceed quota for PoliciesPerRole: 10", 409)
    assert len(iam.list_attached_role_policies(RoleName="builder")["AttachedPolicies"]) == 10
    with pytest.raises(ClientError) as exc:
        iam.delete_role(RoleName="builder")
    assert error(exc) == ("DeleteConflict", "Cannot delete entity, must detach all policies first.", 409)
    for a in arns[:10]:
        iam.detach_role_policy(RoleName="builder", PolicyArn=a)
    iam.put_role_policy(RoleName="builder", PolicyName="inline", PolicyDocument=json.dumps(ALLOW_ECR))
    with pytest.raises(ClientError) as exc:
        iam.delete_role(RoleName="builder")
    assert error(exc) == ("DeleteConflict", "Cannot delete entity, must delete policies first.", 409)
    iam.delete_role_policy(RoleName="builder", PolicyName="inline")
    iam.delete_role(RoleName="builder")


def test_cli_policies(aws_cli, tmp_path):
    doc = tmp_path / "policy.json"
    doc.write_text(json.dumps(ALLOW_ECR))
    code, out, err = aws_cli("iam", "create-policy", "--policy-name", "cli", "--policy-document", f"file://{doc}")
    assert code == 0, err
    arn = out["Policy"]["Arn"]
    assert aws_cli("iam", "create-user", "--user-name", "cli")[0] == 0
    code, out, err = aws_cli("iam", "attach-user-policy", "--user-name", "cli", "--policy-arn", arn)
    assert code == 0, err
    code, out, err = aws_cli("iam", "list-attached-user-policies", "--user-name", "cli")
    assert out["AttachedPolicies"] == [{"PolicyName": "cli", "PolicyArn": arn}]
    code, out, err = aws_cli(
        "iam", "put-user-policy", "--user-name", "cli", "--policy-name", "bad", "--policy-document", "{oops"
    )
    assert code != 0 and "MalformedPolicyDocument" in err
