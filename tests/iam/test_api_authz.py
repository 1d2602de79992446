"""End to end: identities made through the IAM API authenticate and are authorized on ECR, /v2/ and IAM itself."""

from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError
from tests.iam.test_api_roles import OTHER, allow, new_user, session_client, trust
from tests.iam.test_api_users import ACCOUNT, error

from soko.meta.schema import sts_sessions


def v2_status(server, token: str) -> int:
    return httpx.get(f"{server.url}/v2/", headers={"Authorization": f"Basic {token}"}, timeout=30).status_code


def test_user_permissions_follow_policies(aws):
    iam = aws("iam")
    key = new_user(iam, "puller")
    ecr = aws("ecr", *key)
    with pytest.raises(ClientError) as exc:
        ecr.get_authorization_token()
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    assert f"arn:aws:iam::{ACCOUNT}:user/puller" in exc.value.response["Error"]["Message"]
    assert "ecr:GetAuthorizationToken" in exc.value.response["Error"]["Message"]

    arn = iam.create_policy(PolicyName="login", PolicyDocument=allow("ecr:GetAuthorizationToken"))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="puller", PolicyArn=arn)
    assert ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]

    # Detaching takes effect at once (cached policy lookups are invalidated by the write).
    iam.detach_user_policy(UserName="puller", PolicyArn=arn)
    with pytest.raises(ClientError) as exc:
        ecr.get_authorization_token()
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"

    # An inline Deny beats an attached Allow.
    iam.attach_user_policy(UserName="puller", PolicyArn=arn)
    iam.put_user_policy(
        UserName="puller",
        PolicyName="deny",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Deny", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}],
            }
        ),
    )
    with pytest.raises(ClientError):
        ecr.get_authorization_token()


def test_inactive_and_deleted_keys_stop_working(aws, server):
    iam = aws("iam")
    key_id, secret = new_user(iam, "ci", allow("ecr:*"))
    token = aws("ecr", key_id, secret).get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert v2_status(server, token) == 200

    iam.update_access_key(UserName="ci", AccessKeyId=key_id, Status="Inactive")
    with pytest.raises(ClientError) as exc:
        aws("ecr", key_id, secret).describe_repositories()
    assert exc.value.response["Error"]["Code"] == "UnrecognizedClientException"
    with pytest.raises(ClientError) as exc:
        aws("sts", key_id, secret).get_caller_identity()
    assert error(exc)[0] == "InvalidClientTokenId"
    assert v2_status(server, token) == 401

    iam.update_access_key(UserName="ci", AccessKeyId=key_id, Status="Active")
    assert v2_status(server, token) == 200
    iam.delete_access_key(UserName="ci", AccessKeyId=key_id)
    assert v2_status(server, token) == 401
    with pytest.raises(ClientError) as exc:
        aws("ecr", key_id, secret).describe_repositories()
    assert exc.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_session_token_dies_with_the_session(aws, server):
    iam = aws("iam")
    user = new_user(iam, "dev")
    role_arn = iam.create_role(RoleName="pull", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/dev"))[
        "Role"
    ]["Arn"]
    iam.put_role_policy(RoleName="pull", PolicyName="ecr", PolicyDocument=allow("ecr:*"))
    creds = aws("sts", *user).assume_role(RoleArn=role_arn, RoleSessionName="s0", DurationSeconds=900)["Credentials"]
    data = session_client(aws, "ecr", creds).get_authorization_token()["authorizationData"][0]
    assert data["expiresAt"] <= creds["Expiration"]  # an ECR token never outlives its session
    assert v2_status(server, data["authorizationToken"]) == 200
    ctx = server.registry.ctx
    with ctx.write(invalidates=True) as conn:
        conn.execute(
            sts_sessions.update()
            .where(sts_sessions.c.access_key_id == creds["AccessKeyId"])
            .values(expires_at=ctx.clock() - 1)
        )
    assert v2_status(server, data["authorizationToken"]) == 401


def test_iam_actions_need_identity_policies(aws):
    iam = aws("iam")
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["iam:CreateUser", "iam:GetUser"],
                    "Resource": "arn:aws:iam::*:user/ci-*",
                },
                {"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"},
            ],
        }
    )
    admin = aws("iam", *new_user(iam, "half-admin", policy))
    assert admin.create_user(UserName="ci-one")["User"]["UserName"] == "ci-one"
    assert admin.get_user(UserName="ci-one")["User"]["UserName"] == "ci-one"
    assert {u["UserName"] for u in admin.list_users()["Users"]} == {"half-admin", "ci-one"}
    with pytest.raises(ClientError) as exc:
        admin.create_user(UserName="prod")
    code, message, _ = error(exc)
    assert code == "AccessDenied"
    assert message.startswith(
        f"User: arn:aws:iam::{ACCOUNT}:user/half-admin is not authorized to perform: iam:CreateUser "
        f"on resource: arn:aws:iam::{ACCOUNT}:user/prod"
    )
    with pytest.raises(ClientError) as exc:  # no permission, so nothing is revealed about the user
        admin.get_user(UserName="nobody")
    assert error(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        admin.delete_user(UserName="ci-one")
    assert error(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError) as exc:  # not even its own keys without iam:CreateAccessKey
        admin.create_access_key()
    assert error(exc)[0] == "AccessDenied"
    assert [u["UserName"] for u in iam.list_users()["Users"]] == ["ci-one", "half-admin"]


def test_self_service_keys_with_username_variable(aws):
    iam = aws("iam")
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["iam:*AccessKey*"],
                    "Resource": "arn:aws:iam::*:user/${aws:username}",
                }
            ],
        }
    )
    me = aws("iam", *new_user(iam, "self", policy))
    new = me.create_access_key()["AccessKey"]
    assert new["UserName"] == "self"
    assert len(me.list_access_keys()["AccessKeyMetadata"]) == 2
    me.delete_access_key(AccessKeyId=new["AccessKeyId"])
    new_user(iam, "someone-else")
    with pytest.raises(ClientError) as exc:
        me.list_access_keys(UserName="someone-else")
    assert error(exc)[0] == "AccessDenied"


def test_attach_limited_by_policy_arn_condition(aws):
    iam = aws("iam")
    good = iam.create_policy(PolicyName="good", PolicyDocument=allow("ecr:Describe*"))["Policy"]["Arn"]
    bad = iam.create_policy(PolicyName="bad", PolicyDocument=allow("*"))["Policy"]["Arn"]
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "iam:AttachUserPolicy",
                    "Resource": "*",
                    "Condition": {"ArnEquals": {"iam:PolicyARN": good}},
                }
            ],
        }
    )
    delegate = aws("iam", *new_user(iam, "delegate", policy))
    new_user(iam, "target")
    delegate.attach_user_policy(UserName="target", PolicyArn=good)
    with pytest.raises(ClientError) as exc:
        delegate.attach_user_policy(UserName="target", PolicyArn=bad)
    assert error(exc)[0] == "AccessDenied"


def test_assumed_role_without_user_name(aws):
    iam = aws("iam")
    user = new_user(iam, "u1")
    role_arn = iam.create_role(RoleName="admin", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/u1"))[
        "Role"
    ]["Arn"]
    iam.put_role_policy(RoleName="admin", PolicyName="iam", PolicyDocument=allow("iam:*"))
    creds = aws("sts", *user).assume_role(RoleArn=role_arn, RoleSessionName="ops")["Credentials"]
    role_iam = session_client(aws, "iam", creds)
    role_iam.create_user(UserName="made-by-role")
    with pytest.raises(ClientError) as exc:
        role_iam.get_user()
    assert error(exc) == ("ValidationError", "Must specify userName when calling with non-User credentials", 400)


def test_accounts_manage_only_their_own_entities(aws, server):
    key_b, secret_b = server.identity.credentials.create_account(OTHER)
    iam_a, iam_b = aws("iam"), aws("iam", key_b, secret_b)
    iam_a.create_user(UserName="shared-name")
    iam_b.create_user(UserName="shared-name")  # separate namespaces
    arn_a = iam_a.create_policy(PolicyName="a-only", PolicyDocument=allow("ecr:*"))["Policy"]["Arn"]
    with pytest.raises(ClientError) as exc:
        iam_b.get_policy(PolicyArn=arn_a)
    assert error(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        iam_b.delete_policy(PolicyArn=arn_a)
    assert error(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        iam_b.attach_user_policy(UserName="shared-name", PolicyArn=arn_a)
    assert error(exc)[0] == "NoSuchEntity"
    assert [u["Arn"] for u in iam_b.list_users()["Users"]] == [f"arn:aws:iam::{OTHER}:user/shared-name"]
    assert iam_b.list_policies(Scope="Local")["Policies"] == []
    iam_a.get_policy(PolicyArn=arn_a)


def test_create_account_helper(server):
    from soko.iam.api import IamApi

    api = IamApi(server.registry.settings, server.identity)
    out = api.create_account("444455556666")
    assert out["AccountId"] == "444455556666"
    assert out["AccessKeyId"].startswith("AKIA") and len(out["SecretAccessKey"]) == 40
    with pytest.raises(ValueError):
        api.create_account("444455556666")


def test_access_denied_is_http_403(aws):
    iam = aws("iam")
    with pytest.raises(ClientError) as exc:
        aws("iam", *new_user(iam, "nobody-special")).list_users()
    assert error(exc)[0] == "AccessDenied"
    assert error(exc)[2] == 403
