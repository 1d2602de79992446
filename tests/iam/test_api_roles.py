"""Roles, sts:GetCallerIdentity and sts:AssumeRole (same account, cross-account, expiry)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError
from tests.iam.test_api_users import ACCOUNT, error, unvalidated

from soko.meta.schema import sts_sessions

OTHER = "111122223333"


def trust(*principals: str, **condition) -> str:
    statement: dict = {"Effect": "Allow", "Principal": {"AWS": list(principals)}, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def allow(action: str, resource: str = "*") -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}
    )


def new_user(iam, name: str, policy: str | None = None) -> tuple[str, str]:
    iam.create_user(UserName=name)
    if policy:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def session_client(aws, service: str, creds: dict):
    return aws(service, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


def test_role_lifecycle(aws):
    iam = aws("iam")
    document = trust(f"arn:aws:iam::{ACCOUNT}:root")
    role = iam.create_role(
        RoleName="deployer", Path="/ci/", AssumeRolePolicyDocument=document, Description="d", MaxSessionDuration=7200
    )["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/ci/deployer"
    assert role["RoleId"].startswith("AROA")
    assert role["MaxSessionDuration"] == 7200
    assert role["AssumeRolePolicyDocument"] == json.loads(document)
    got = iam.get_role(RoleName="deployer")["Role"]
    assert got["RoleId"] == role["RoleId"] and got["Description"] == "d"
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["deployer"]
    assert iam.list_roles(PathPrefix="/other/")["Roles"] == []

    with pytest.raises(ClientError) as exc:
        iam.create_role(RoleName="Deployer", AssumeRolePolicyDocument=document)
    assert error(exc) == ("EntityAlreadyExists", "Role with name Deployer already exists.", 409)
    iam.delete_role(RoleName="deployer")
    with pytest.raises(ClientError) as exc:
        iam.get_role(RoleName="deployer")
    assert error(exc) == ("NoSuchEntity", "The role with name deployer cannot be found.", 404)
    with pytest.raises(ClientError) as exc:
        iam.delete_role(RoleName="deployer")
    assert error(exc)[0] == "NoSuchEntity"


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{", "MalformedPolicyDocument"),
        (allow("sts:AssumeRole"), "MalformedPolicyDocument"),  # no Principal: not a trust policy
        (trust(*[f"arn:aws:iam::{ACCOUNT}:user/u{i:04d}" for i in range(60)]), "LimitExceeded"),
    ],
)
def test_create_role_refuses_bad_trust_policies(aws, document, code):
    iam = aws("iam")
    with pytest.raises(ClientError) as exc:
        iam.create_role(RoleName="r", AssumeRolePolicyDocument=document)
    assert error(exc)[0] == code
    assert iam.list_roles()["Roles"] == []


def test_create_role_validates_session_duration(server):
    with pytest.raises(ClientError) as exc:
        unvalidated(server, "iam").create_role(RoleName="r", AssumeRolePolicyDocument=trust("*"), MaxSessionDuration=60)
    assert error(exc)[0] == "ValidationError"


def test_get_caller_identity(aws):
    me = aws("sts").get_caller_identity()
    me.pop("ResponseMetadata")
    assert me == {"UserId": ACCOUNT, "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root"}
    iam = aws("iam")
    user_id = iam.create_user(UserName="who")["User"]["UserId"]
    key = iam.create_access_key(UserName="who")["AccessKey"]
    me = aws("sts", key["AccessKeyId"], key["SecretAccessKey"]).get_caller_identity()
    assert (me["UserId"], me["Account"], me["Arn"]) == (user_id, ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/who")


def test_assume_role_same_account(aws, server):
    iam = aws("iam")
    user = new_user(iam, "dev")
    role = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/dev"))[
        "Role"
    ]
    iam.put_role_policy(RoleName="reader", PolicyName="ecr", PolicyDocument=allow("ecr:*"))
    sts = aws("sts", *user)
    before = datetime.now(UTC)
    out = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1")
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert 3500 < (creds["Expiration"] - before).total_seconds() <= 3601
    assert out["AssumedRoleUser"] == {
        "AssumedRoleId": f"{role['RoleId']}:s1",
        "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/reader/s1",
    }
    me = session_client(aws, "sts", creds).get_caller_identity()
    assert me["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/reader/s1"
    assert me["UserId"] == f"{role['RoleId']}:s1"
    assert me["Account"] == ACCOUNT
    # The session acts with the role's permissions.
    ecr = session_client(aws, "ecr", creds)
    ecr.create_repository(repositoryName="from-role")
    assert ecr.get_authorization_token()["authorizationData"]

    # The session token is required and must be the one issued.
    with pytest.raises(ClientError) as exc:
        aws("sts", creds["AccessKeyId"], creds["SecretAccessKey"]).get_caller_identity()
    assert error(exc)[0] == "InvalidClientTokenId"
    with pytest.raises(ClientError) as exc:
        aws("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"] + "x").get_caller_identity()
    assert error(exc)[0] == "InvalidClientTokenId"

    # The token is stored hashed, the secret encrypted.
    with server.registry.ctx.db.read() as conn:
        row = conn.execute(sa.select(sts_sessions).where(sts_sessions.c.access_key_id == creds["AccessKeyId"])).one()
    assert row.session_token_sha256 == hashlib.sha256(creds["SessionToken"].encode()).hexdigest()
    assert creds["SecretAccessKey"].encode() not in row.secret_encrypted
    assert row.source_arn == f"arn:aws:iam::{ACCOUNT}:user/dev"


def test_assume_role_trust_policy_enforced(aws):
    iam = aws("iam")
    outsider = new_user(iam, "outsider", allow("sts:AssumeRole"))
    role_arn = iam.create_role(RoleName="locked", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/dev"))[
        "Role"
    ]["Arn"]
    with pytest.raises(ClientError) as exc:
        aws("sts", *outsider).assume_role(RoleArn=role_arn, RoleSessionName="s0")
    assert error(exc)[:2] == (
        "AccessDenied",
        f"User: arn:aws:iam::{ACCOUNT}:user/outsider is not authorized to perform: sts:AssumeRole "
        f"on resource: {role_arn}",
    )
    # A role that does not exist is indistinguishable from one that does not trust the caller.
    missing = f"arn:aws:iam::{ACCOUNT}:role/missing"
    with pytest.raises(ClientError) as exc:
        aws("sts", *outsider).assume_role(RoleArn=missing, RoleSessionName="s0")
    assert error(exc)[:2] == (
        "AccessDenied",
        f"User: arn:aws:iam::{ACCOUNT}:user/outsider is not authorized to perform: sts:AssumeRole "
        f"on resource: {missing}",
    )
    # The root user cannot assume roles (as on AWS).
    with pytest.raises(ClientError) as exc:
        aws("sts").assume_role(RoleArn=role_arn, RoleSessionName="s0")
    assert error(exc)[:2] == ("AccessDenied", "Roles may not be assumed by root accounts.")


def test_trust_naming_the_account_needs_an_identity_policy(aws):
    iam = aws("iam")
    role_arn = iam.create_role(RoleName="acct", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:root"))["Role"][
        "Arn"
    ]
    plain = new_user(iam, "plain")
    with pytest.raises(ClientError) as exc:
        aws("sts", *plain).assume_role(RoleArn=role_arn, RoleSessionName="s0")
    assert error(exc)[0] == "AccessDenied"
    allowed = new_user(iam, "allowed", allow("sts:AssumeRole", role_arn))
    assert aws("sts", *allowed).assume_role(RoleArn=role_arn, RoleSessionName="s0")["Credentials"]
    elsewhere = new_user(iam, "elsewhere", allow("sts:AssumeRole", f"arn:aws:iam::{ACCOUNT}:role/other"))
    with pytest.raises(ClientError) as exc:
        aws("sts", *elsewhere).assume_role(RoleArn=role_arn, RoleSessionName="s0")
    assert error(exc)[0] == "AccessDenied"


def test_trust_conditions_external_id(aws):
    iam = aws("iam")
    user = new_user(iam, "vendor")
    role_arn = iam.create_role(
        RoleName="vendor-access",
        AssumeRolePolicyDocument=trust(
            f"arn:aws:iam::{ACCOUNT}:user/vendor", StringEquals={"sts:ExternalId": "s3cret-id"}
        ),
    )["Role"]["Arn"]
    sts = aws("sts", *user)
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="s0")
    assert error(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError):
        sts.assume_role(RoleArn=role_arn, RoleSessionName="s0", ExternalId="wrong-id")
    assert sts.assume_role(RoleArn=role_arn, RoleSessionName="s0", ExternalId="s3cret-id")["Credentials"]


def test_assume_role_cross_account(aws, server):
    key_b, secret_b = server.identity.credentials.create_account(OTHER)
    iam_b = aws("iam", key_b, secret_b)
    assert aws("sts", key_b, secret_b).get_caller_identity()["Arn"] == f"arn:aws:iam::{OTHER}:root"

    iam_a = aws("iam")
    role_arn = iam_a.create_role(RoleName="shared", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{OTHER}:root"))[
        "Role"
    ]["Arn"]
    iam_a.put_role_policy(RoleName="shared", PolicyName="ecr", PolicyDocument=allow("ecr:*"))

    # B's user needs B's permission too.
    without = new_user(iam_b, "without")
    with pytest.raises(ClientError) as exc:
        aws("sts", *without).assume_role(RoleArn=role_arn, RoleSessionName="x0")
    assert error(exc)[:2] == (
        "AccessDenied",
        f"User: arn:aws:iam::{OTHER}:user/without is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
    )
    builder = new_user(iam_b, "builder", allow("sts:AssumeRole", role_arn))
    creds = aws("sts", *builder).assume_role(RoleArn=role_arn, RoleSessionName="ci")["Credentials"]
    me = session_client(aws, "sts", creds).get_caller_identity()
    assert me["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/shared/ci"
    assert me["Account"] == ACCOUNT
    session_client(aws, "ecr", creds).create_repository(repositoryName="cross")
    assert [r["repositoryName"] for r in aws("ecr").describe_repositories()["repositories"]] == ["cross"]

    # A role whose trust names only account A is closed to B, whatever B's policies say.
    closed = iam_a.create_role(RoleName="closed", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:root"))[
        "Role"
    ]["Arn"]
    wide = new_user(iam_b, "wide", allow("sts:AssumeRole"))
    with pytest.raises(ClientError) as exc:
        aws("sts", *wide).assume_role(RoleArn=closed, RoleSessionName="x0")
    assert error(exc)[0] == "AccessDenied"

    # Accounts are separate IAM namespaces.
    assert [u["UserName"] for u in iam_b.list_users()["Users"]] == ["builder", "wide", "without"]
    assert iam_a.list_users()["Users"] == []


def test_session_duration_rules(aws, server):
    iam = aws("iam")
    user = new_user(iam, "dur")
    role = iam.create_role(
        RoleName="dur", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/dur"), MaxSessionDuration=7200
    )["Role"]
    iam.put_role_policy(RoleName="dur", PolicyName="chain", PolicyDocument=allow("sts:AssumeRole"))
    sts = aws("sts", *user)
    unvalidated_sts = unvalidated(server, "sts", *user)
    now = datetime.now(UTC)
    short = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="short", DurationSeconds=900)["Credentials"]
    assert 850 < (short["Expiration"] - now).total_seconds() <= 901
    long = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="long", DurationSeconds=7200)["Credentials"]
    assert 7100 < (long["Expiration"] - now).total_seconds() <= 7201
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s0", DurationSeconds=7201)
    assert error(exc) == (
        "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        400,
    )
    with pytest.raises(ClientError) as exc:
        unvalidated_sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s0", DurationSeconds=899)
    assert error(exc)[0] == "ValidationError"
    with pytest.raises(ClientError) as exc:
        unvalidated_sts.assume_role(RoleArn=role["Arn"], RoleSessionName="bad name")
    assert error(exc)[0] == "ValidationError"

    # Role chaining: a session assuming a role is limited to one hour.
    chained_role = iam.create_role(
        RoleName="next", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:role/dur"), MaxSessionDuration=7200
    )["Role"]
    chained = session_client(aws, "sts", long)
    with pytest.raises(ClientError) as exc:
        chained.assume_role(RoleArn=chained_role["Arn"], RoleSessionName="c0", DurationSeconds=7200)
    assert error(exc)[0] == "ValidationError"
    out = chained.assume_role(RoleArn=chained_role["Arn"], RoleSessionName="c0")
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/next/c0"


def test_session_expiry_and_role_deletion(aws, server):
    iam = aws("iam")
    user = new_user(iam, "exp")
    role_arn = iam.create_role(RoleName="exp", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/exp"))[
        "Role"
    ]["Arn"]
    iam.put_role_policy(RoleName="exp", PolicyName="ecr", PolicyDocument=allow("ecr:*"))
    creds = aws("sts", *user).assume_role(RoleArn=role_arn, RoleSessionName="s0", DurationSeconds=900)["Credentials"]
    session_client(aws, "sts", creds).get_caller_identity()
    ctx = server.registry.ctx
    with ctx.write(invalidates=True) as conn:
        conn.execute(
            sts_sessions.update()
            .where(sts_sessions.c.access_key_id == creds["AccessKeyId"])
            .values(expires_at=ctx.clock() - 1)
        )
    with pytest.raises(ClientError) as exc:
        session_client(aws, "sts", creds).get_caller_identity()
    assert error(exc)[0] == "ExpiredToken"
    with pytest.raises(ClientError) as exc:
        session_client(aws, "ecr", creds).describe_repositories()
    assert exc.value.response["Error"]["Code"] == "ExpiredTokenException"

    # Sessions die with their role.
    fresh = aws("sts", *user).assume_role(RoleArn=role_arn, RoleSessionName="t0")["Credentials"]
    session_client(aws, "sts", fresh).get_caller_identity()
    iam.delete_role_policy(RoleName="exp", PolicyName="ecr")
    iam.delete_role(RoleName="exp")
    with pytest.raises(ClientError) as exc:
        session_client(aws, "sts", fresh).get_caller_identity()
    assert error(exc)[0] == "InvalidClientTokenId"


def test_unsupported_session_policies_are_refused(aws):
    iam = aws("iam")
    user = new_user(iam, "sp")
    role_arn = iam.create_role(RoleName="sp", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/sp"))[
        "Role"
    ]["Arn"]
    with pytest.raises(ClientError) as exc:
        aws("sts", *user).assume_role(RoleArn=role_arn, RoleSessionName="s0", Policy=allow("ecr:*"))
    assert error(exc)[0] == "ValidationError"


def test_cli_assume_role(aws_cli, aws):
    iam = aws("iam")
    key_id, secret = new_user(iam, "cli")
    iam.create_role(RoleName="cli", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/cli"))
    env = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    code, out, err = aws_cli(
        "sts",
        "assume-role",
        "--role-arn",
        f"arn:aws:iam::{ACCOUNT}:role/cli",
        "--role-session-name",
        "cli-session",
        env_extra=env,
    )
    assert code == 0, err
    creds = out["Credentials"]
    env = {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }
    code, out, err = aws_cli("sts", "get-caller-identity", env_extra=env)
    assert code == 0, err
    assert out["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/cli/cli-session"
