"""Tags of IAM users and roles: stored, listed, and used as aws:PrincipalTag / aws:ResourceTag in decisions."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from botocore.exceptions import ClientError
from tests.iam.test_api_roles import new_user, session_client, trust
from tests.iam.test_api_users import ACCOUNT, error

from soko.meta.schema import metadata


def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _tags(*pairs: tuple[str, str]) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in pairs]


def test_user_and_role_tags_are_stored(aws, server):
    with server.registry.ctx.db.engine.connect() as conn:  # migration 0009 creates the table the schema declares
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert not [d for d in diff if "iam_tags" in repr(d)]

    iam = aws("iam")
    iam.create_user(UserName="alice", Tags=_tags(("team", "blue")))
    assert iam.get_user(UserName="alice")["User"]["Tags"] == _tags(("team", "blue"))
    iam.tag_user(UserName="ALICE", Tags=_tags(("env", "dev"), ("Team", "red")))  # keys are case-insensitive
    assert iam.list_user_tags(UserName="alice")["Tags"] == _tags(("Team", "red"), ("env", "dev"))
    page = iam.list_user_tags(UserName="alice", MaxItems=1)
    assert page["IsTruncated"] and page["Tags"] == _tags(("Team", "red"))
    assert iam.list_user_tags(UserName="alice", Marker=page["Marker"])["Tags"] == _tags(("env", "dev"))
    iam.untag_user(UserName="alice", TagKeys=["TEAM", "missing"])
    assert iam.list_user_tags(UserName="alice")["Tags"] == _tags(("env", "dev"))

    iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:root"))
    iam.tag_role(RoleName="deployer", Tags=_tags(("tier", "1")))
    assert iam.get_role(RoleName="deployer")["Role"]["Tags"] == _tags(("tier", "1"))
    assert iam.list_role_tags(RoleName="deployer")["Tags"] == _tags(("tier", "1"))
    iam.untag_role(RoleName="deployer", TagKeys=["tier"])
    assert iam.list_role_tags(RoleName="deployer")["Tags"] == []
    assert "Tags" not in iam.get_role(RoleName="deployer")["Role"]

    for call, code in [
        (lambda: iam.tag_user(UserName="nobody", Tags=_tags(("a", "b"))), "NoSuchEntity"),
        (lambda: iam.list_role_tags(RoleName="nobody"), "NoSuchEntity"),
        (lambda: iam.tag_user(UserName="alice", Tags=_tags(("aws:team", "b"))), "InvalidInput"),
        (lambda: iam.tag_user(UserName="alice", Tags=_tags(("k", "1"), ("K", "2"))), "InvalidInput"),
        (lambda: iam.tag_user(UserName="alice", Tags=_tags(*[(f"k{i}", "v") for i in range(50)])), "LimitExceeded"),
    ]:
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc)[0] == code
    assert iam.list_user_tags(UserName="alice")["Tags"] == _tags(("env", "dev"))  # nothing half-written

    # Deleting a user takes its tags: a new user of the same name starts without them.
    iam.delete_user(UserName="alice")
    iam.create_user(UserName="alice")
    assert iam.list_user_tags(UserName="alice")["Tags"] == []


def test_principal_tags_in_conditions_and_variables(aws):
    iam = aws("iam")
    aws("ecr").create_repository(repositoryName="blue/app")
    policy = _policy(
        {
            "Effect": "Allow",
            "Action": "ecr:DescribeRepositories",
            "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/${{aws:PrincipalTag/team}}/*",
        },
        {
            "Effect": "Allow",
            "Action": "ecr:GetAuthorizationToken",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/team": "blue"}},
        },
    )
    key = new_user(iam, "dev", policy)
    ecr = aws("ecr", *key)
    with pytest.raises(ClientError):
        ecr.get_authorization_token()
    with pytest.raises(ClientError):
        ecr.describe_repositories(repositoryNames=["blue/app"])
    iam.tag_user(UserName="dev", Tags=_tags(("team", "blue")))
    assert ecr.get_authorization_token()["authorizationData"]
    assert ecr.describe_repositories(repositoryNames=["blue/app"])["repositories"]
    iam.tag_user(UserName="dev", Tags=_tags(("team", "red")))
    with pytest.raises(ClientError):
        ecr.get_authorization_token()

    # An assumed-role session carries the role's tags (not the caller's).
    role = iam.create_role(RoleName="puller", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/dev"))
    iam.put_role_policy(RoleName="puller", PolicyName="p", PolicyDocument=policy)
    creds = aws("sts", *key).assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="s1")["Credentials"]
    session = session_client(aws, "ecr", creds)
    with pytest.raises(ClientError):
        session.get_authorization_token()
    iam.tag_role(RoleName="puller", Tags=_tags(("team", "blue")))
    assert session.get_authorization_token()["authorizationData"]


def test_request_and_resource_tags_on_iam_actions(aws):
    iam = aws("iam")
    policy = _policy(
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*"},
        {  # users tagged protected=true cannot be changed or deleted
            "Effect": "Deny",
            "Action": ["iam:DeleteUser", "iam:TagUser", "iam:UntagUser"],
            "Resource": "*",
            "Condition": {"StringEquals": {"iam:ResourceTag/protected": "true"}},
        },
        {  # nor can anyone tag a user protected
            "Effect": "Deny",
            "Action": ["iam:TagUser", "iam:CreateUser"],
            "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": "protected"}},
        },
    )
    admin = aws("iam", *new_user(iam, "admin", policy))
    iam.create_user(UserName="keep", Tags=_tags(("protected", "true")))
    admin.create_user(UserName="temp", Tags=_tags(("env", "dev")))
    for call in [
        lambda: admin.delete_user(UserName="keep"),
        lambda: admin.untag_user(UserName="keep", TagKeys=["protected"]),
        lambda: admin.tag_user(UserName="temp", Tags=_tags(("protected", "true"))),
        lambda: admin.create_user(UserName="sneaky", Tags=_tags(("protected", "true"))),
    ]:
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc)[0] == "AccessDenied"
    admin.untag_user(UserName="temp", TagKeys=["env"])
    admin.delete_user(UserName="temp")
    assert {u["UserName"] for u in iam.list_users()["Users"]} == {"admin", "keep"}


def test_trust_policy_matches_caller_tags_to_role_tags(aws):
    """ABAC for role assumption: the trust policy compares the caller's tag with the role's own tag."""
    iam = aws("iam")
    condition = {"StringEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}}
    role = iam.create_role(
        RoleName="team-role",
        AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:root", **condition),
        Tags=_tags(("team", "blue")),
    )["Role"]["Arn"]
    sts = aws("sts", *new_user(iam, "dev", _policy({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"})))
    with pytest.raises(ClientError) as exc:  # an untagged caller
        sts.assume_role(RoleArn=role, RoleSessionName="s1")
    assert error(exc)[0] == "AccessDenied"
    iam.tag_user(UserName="dev", Tags=_tags(("team", "red")))
    with pytest.raises(ClientError):
        sts.assume_role(RoleArn=role, RoleSessionName="s1")
    iam.tag_user(UserName="dev", Tags=_tags(("team", "blue")))
    assert sts.assume_role(RoleArn=role, RoleSessionName="s1")["Credentials"]["AccessKeyId"].startswith("ASIA")
