"""IAM users and access keys over the Query protocol, driven by boto3 and the AWS CLI."""

from __future__ import annotations

import concurrent.futures

import pytest
from botocore.exceptions import ClientError, ParamValidationError
from tests.conftest import ROOT_KEY_ID, ROOT_SECRET, SUITE_RETRIES

ACCOUNT = "000000000000"


def unvalidated(server, service: str, key_id: str = ROOT_KEY_ID, secret: str = ROOT_SECRET):
    """A client that skips botocore's own parameter validation (to test the server's); root-signed by default."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries=SUITE_RETRIES, parameter_validation=False),
    )


def error(exc: pytest.ExceptionInfo) -> tuple[str, str, int]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_create_get_list_delete_user(aws):
    iam = aws("iam")
    created = iam.create_user(UserName="alice", Path="/team/", Tags=[{"Key": "env", "Value": "dev"}])["User"]
    assert created["UserName"] == "alice"
    assert created["Path"] == "/team/"
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/alice"
    assert created["UserId"].startswith("AIDA") and len(created["UserId"]) == 21
    assert created["Tags"] == [{"Key": "env", "Value": "dev"}]
    assert created["CreateDate"].tzinfo is not None

    got = iam.get_user(UserName="alice")["User"]
    assert {k: got[k] for k in ("UserName", "UserId", "Arn", "Path")} == {
        k: created[k] for k in ("UserName", "UserId", "Arn", "Path")
    }
    iam.create_user(UserName="bob")
    listed = iam.list_users()
    assert [u["UserName"] for u in listed["Users"]] == ["alice", "bob"]
    assert listed["IsTruncated"] is False
    assert [u["UserName"] for u in iam.list_users(PathPrefix="/team/")["Users"]] == ["alice"]

    iam.delete_user(UserName="alice")
    with pytest.raises(ClientError) as exc:
        iam.get_user(UserName="alice")
    assert error(exc) == ("NoSuchEntity", "The user with name alice cannot be found.", 404)


def test_list_users_paginates(aws):
    iam = aws("iam")
    for i in range(5):
        iam.create_user(UserName=f"u{i}")
    first = iam.list_users(MaxItems=2)
    assert [u["UserName"] for u in first["Users"]] == ["u0", "u1"]
    assert first["IsTruncated"] is True
    second = iam.list_users(MaxItems=2, Marker=first["Marker"])
    assert [u["UserName"] for u in second["Users"]] == ["u2", "u3"]
    names = [u["UserName"] for page in iam.get_paginator("list_users").paginate() for u in page["Users"]]
    assert names == [f"u{i}" for i in range(5)]


def test_get_user_without_name_is_the_caller(aws):
    iam = aws("iam")
    root = iam.get_user()["User"]
    assert root["UserId"] == ACCOUNT
    assert root["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert "UserName" not in root

    iam.create_user(UserName="carol")
    iam.put_user_policy(
        UserName="carol",
        PolicyName="self",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetUser",'
        '"Resource":"arn:aws:iam::*:user/${aws:username}"}]}',
    )
    key = iam.create_access_key(UserName="carol")["AccessKey"]
    me = aws("iam", key["AccessKeyId"], key["SecretAccessKey"]).get_user()["User"]
    assert me["UserName"] == "carol"


def test_user_errors(aws, server):
    iam = aws("iam")
    iam.create_user(UserName="dave")
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="dave")
    assert error(exc) == ("EntityAlreadyExists", "User with name dave already exists.", 409)
    with pytest.raises(ClientError) as exc:  # IAM names are unique regardless of case
        iam.create_user(UserName="DAVE")
    assert error(exc)[0] == "EntityAlreadyExists"
    assert iam.get_user(UserName="Dave")["User"]["UserName"] == "dave"

    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="bad name!")
    code, message, status = error(exc)
    assert (code, status) == ("ValidationError", 400)
    assert "userName" in message and "regular expression" in message
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="x" * 65)
    assert error(exc)[0] == "ValidationError"
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="eve", Path="no-slashes")
    assert error(exc)[0] == "ValidationError"
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="eve", Tags=[{"Key": "a", "Value": "1"}, {"Key": "A", "Value": "2"}])
    assert error(exc)[0] == "InvalidInput"
    with pytest.raises(ParamValidationError):
        iam.create_user(UserName="")
    with pytest.raises(ClientError) as exc:
        unvalidated(server, "iam").create_user(UserName="")
    assert error(exc)[0] == "ValidationError"
    for op in (iam.delete_user, iam.get_user):
        with pytest.raises(ClientError) as exc:
            op(UserName="nobody")
        assert error(exc) == ("NoSuchEntity", "The user with name nobody cannot be found.", 404)


def test_delete_user_conflicts(aws):
    iam = aws("iam")
    iam.create_user(UserName="frank")
    key = iam.create_access_key(UserName="frank")["AccessKey"]
    with pytest.raises(ClientError) as exc:
        iam.delete_user(UserName="frank")
    assert error(exc) == ("DeleteConflict", "Cannot delete entity, must delete access keys first.", 409)
    iam.delete_access_key(UserName="frank", AccessKeyId=key["AccessKeyId"])

    iam.put_user_policy(
        UserName="frank",
        PolicyName="p",
        PolicyDocument='{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"*"}}',
    )
    with pytest.raises(ClientError) as exc:
        iam.delete_user(UserName="frank")
    assert error(exc) == ("DeleteConflict", "Cannot delete entity, must delete policies first.", 409)
    iam.delete_user_policy(UserName="frank", PolicyName="p")

    arn = iam.create_policy(
        PolicyName="m",
        PolicyDocument='{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"*"}}',
    )["Policy"]["Arn"]
    iam.attach_user_policy(UserName="frank", PolicyArn=arn)
    with pytest.raises(ClientError) as exc:
        iam.delete_user(UserName="frank")
    assert error(exc) == ("DeleteConflict", "Cannot delete entity, must detach all policies first.", 409)
    iam.detach_user_policy(UserName="frank", PolicyArn=arn)
    iam.delete_user(UserName="frank")


def test_concurrent_create_user_one_wins(aws):
    clients = [aws("iam") for _ in range(8)]

    def create(client):
        try:
            client.create_user(UserName="racer")
            return "ok"
        except ClientError as exc:
            return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, clients))
    assert results.count("ok") == 1
    assert sorted(r for r in results if r != "ok") == [("EntityAlreadyExists", 409)] * 7
    assert [u["UserName"] for u in clients[0].list_users()["Users"]] == ["racer"]


# ---- access keys -------------------------------------------------------------------------------------------------


def test_access_key_lifecycle(aws):
    iam = aws("iam")
    iam.create_user(UserName="gina")
    key = iam.create_access_key(UserName="gina")["AccessKey"]
    assert key["UserName"] == "gina"
    assert key["AccessKeyId"].startswith("AKIA") and len(key["AccessKeyId"]) == 20
    assert len(key["SecretAccessKey"]) == 40
    assert key["Status"] == "Active"

    meta = iam.list_access_keys(UserName="gina")["AccessKeyMetadata"]
    assert [(m["AccessKeyId"], m["Status"], m["UserName"]) for m in meta] == [(key["AccessKeyId"], "Active", "gina")]
    assert "SecretAccessKey" not in meta[0]

    iam.update_access_key(UserName="gina", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    assert iam.list_access_keys(UserName="gina")["AccessKeyMetadata"][0]["Status"] == "Inactive"
    iam.update_access_key(UserName="gina", AccessKeyId=key["AccessKeyId"], Status="Active")

    iam.create_access_key(UserName="gina")
    with pytest.raises(ClientError) as exc:
        iam.create_access_key(UserName="gina")
    assert error(exc) == ("LimitExceeded", "Cannot exceed quota for AccessKeysPerUser: 2", 409)

    iam.delete_access_key(UserName="gina", AccessKeyId=key["AccessKeyId"])
    assert len(iam.list_access_keys(UserName="gina")["AccessKeyMetadata"]) == 1
    with pytest.raises(ClientError) as exc:
        iam.delete_access_key(UserName="gina", AccessKeyId=key["AccessKeyId"])
    assert error(exc) == ("NoSuchEntity", f"The Access Key with id {key['AccessKeyId']} cannot be found.", 404)


def test_access_key_errors(aws):
    iam = aws("iam")
    iam.create_user(UserName="hank")
    iam.create_user(UserName="ivy")
    key = iam.create_access_key(UserName="hank")["AccessKey"]["AccessKeyId"]
    with pytest.raises(ClientError) as exc:  # a key is only found under its own user
        iam.update_access_key(UserName="ivy", AccessKeyId=key, Status="Inactive")
    assert error(exc)[0] == "NoSuchEntity"
    with pytest.raises(ClientError) as exc:
        iam.update_access_key(UserName="hank", AccessKeyId=key, Status="Disabled")
    assert error(exc)[0] == "ValidationError"
    with pytest.raises(ClientError) as exc:
        iam.create_access_key(UserName="nobody")
    assert error(exc) == ("NoSuchEntity", "The user with name nobody cannot be found.", 404)
    with pytest.raises(ClientError) as exc:
        iam.list_access_keys(UserName="nobody")
    assert error(exc)[0] == "NoSuchEntity"


def test_root_access_keys(aws):
    iam = aws("iam")
    listed = iam.list_access_keys()["AccessKeyMetadata"]
    assert [m["AccessKeyId"] for m in listed] == [ROOT_KEY_ID]
    second = iam.create_access_key()["AccessKey"]
    assert "UserName" not in second
    sts = aws("sts", second["AccessKeyId"], second["SecretAccessKey"])
    assert sts.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    with pytest.raises(ClientError) as exc:
        iam.create_access_key()
    assert error(exc)[0] == "LimitExceeded"
    iam.delete_access_key(AccessKeyId=second["AccessKeyId"])
    assert [m["AccessKeyId"] for m in iam.list_access_keys()["AccessKeyMetadata"]] == [ROOT_KEY_ID]


def test_secrets_are_stored_encrypted(aws, server):
    import sqlalchemy as sa

    from soko.meta.schema import access_keys

    iam = aws("iam")
    iam.create_user(UserName="jill")
    key = iam.create_access_key(UserName="jill")["AccessKey"]
    with server.registry.ctx.db.read() as conn:
        blob = conn.execute(
            sa.select(access_keys.c.secret_encrypted).where(access_keys.c.access_key_id == key["AccessKeyId"])
        ).scalar()
    assert key["SecretAccessKey"].encode() not in blob
    assert server.identity.master.decrypt(blob, key["AccessKeyId"]) == key["SecretAccessKey"]


# ---- the AWS CLI ---------------------------------------------------------------------------------------------------


def test_cli_users_and_keys(aws_cli):
    code, out, err = aws_cli("iam", "create-user", "--user-name", "alice")
    assert code == 0, err
    assert out["User"]["UserName"] == "alice"
    code, out, err = aws_cli("iam", "create-access-key", "--user-name", "alice")
    assert code == 0, err
    key = out["AccessKey"]
    code, out, err = aws_cli("iam", "list-users")
    assert code == 0, err
    assert [u["UserName"] for u in out["Users"]] == ["alice"]
    code, out, err = aws_cli("iam", "create-user", "--user-name", "alice")
    assert code != 0
    assert "EntityAlreadyExists" in err and "User with name alice already exists." in err
    code, out, err = aws_cli("iam", "get-user", "--user-name", "zed")
    assert code != 0 and "NoSuchEntity" in err and "The user with name zed cannot be found." in err

    env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    code, out, err = aws_cli("sts", "get-caller-identity", env_extra=env)
    assert code == 0, err
    assert out["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/alice"
    assert out["UserId"].startswith("AIDA") and out["Account"] == ACCOUNT
    code, out, err = aws_cli("iam", "list-users", env_extra=env)
    assert code != 0 and "AccessDenied" in err
