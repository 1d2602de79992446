"""The KMS API (TrentService on the AWS endpoint) through boto3 and the real AWS CLI: every operation, key states,
rotation, deletion with crypto-shredding (settable clock), aliases, key policies (a restricted user, another
account), hostile inputs, and the audit log."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from soko.audit import AuditQuery
from tests.clock import Clock
from tests.iam.test_api_roles import OTHER, allow, new_user
from tests.iam.test_api_users import ACCOUNT, unvalidated

DAY = 86400


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


@pytest.fixture
def kms(aws):
    return aws("kms")


def test_every_operation_through_boto3(kms) -> None:
    meta = kms.create_key(Description="app", Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]
    key_id, arn = meta["KeyId"], meta["Arn"]
    assert arn == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}"
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] and meta["KeyManager"] == "CUSTOMER"
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert kms.describe_key(KeyId=arn)["KeyMetadata"]["Description"] == "app"
    assert {"KeyId": key_id, "KeyArn": arn} in kms.list_keys()["Keys"]

    kms.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    aliases = kms.list_aliases(KeyId=key_id)["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/app"] and aliases[0]["TargetKeyId"] == key_id
    second = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.update_alias(AliasName="alias/app", TargetKeyId=second)
    assert kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == second
    kms.update_alias(AliasName="alias/app", TargetKeyId=key_id)

    ctx = {"purpose": "test"}
    enc = kms.encrypt(KeyId="alias/app", Plaintext=b"secret", EncryptionContext=ctx)
    assert enc["KeyId"] == arn and enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)
    assert dec["Plaintext"] == b"secret" and dec["KeyId"] == arn
    data = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(data["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=data["CiphertextBlob"])["Plaintext"] == data["Plaintext"]
    assert len(kms.generate_data_key(KeyId=key_id, NumberOfBytes=64)["Plaintext"]) == 64
    blob = kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_128")
    assert "Plaintext" not in blob and len(kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])["Plaintext"]) == 16
    re = kms.re_encrypt(
        CiphertextBlob=enc["CiphertextBlob"],
        SourceEncryptionContext=ctx,
        DestinationKeyId=second,
        DestinationEncryptionContext={"new": "ctx"},
    )
    assert re["SourceKeyId"] == arn and re["KeyId"].endswith(second)
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext={"new": "ctx"})["Plaintext"] == b"secret"

    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 180 and "NextRotationDate" in status
    assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == key_id
    assert "OnDemandRotationStartDate" in kms.get_key_rotation_status(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"secret"
    kms.disable_key_rotation(KeyId=key_id)
    assert not kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"]

    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    policy["Statement"].append(
        {"Sid": "x", "Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"}
    )
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
    with pytest.raises(ClientError) as exc:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert code(exc) == "AccessDeniedException"

    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "env", "TagValue": "prod"}])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "env", "TagValue": "prod"},
        {"TagKey": "team", "TagValue": "a"},
    ]
    kms.untag_resource(KeyId=key_id, TagKeys=["team", "absent"])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "env", "TagValue": "prod"}]

    kms.disable_key(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=key_id)
    sched = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert sched["KeyState"] == "PendingDeletion" and sched["PendingWindowInDays"] == 7 and sched["KeyId"] == arn
    assert kms.cancel_key_deletion(KeyId=key_id)["KeyId"] == arn
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.delete_alias(AliasName="alias/app")
    assert kms.list_aliases(KeyId=key_id)["Aliases"] == []


def test_states_answer_as_kms_does(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    kms.disable_key(KeyId=key_id)
    for call in (
        lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x"),
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.enable_key_rotation(KeyId=key_id),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) == "DisabledException" and "is disabled" in exc.value.response["Error"]["Message"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    for call in (
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.enable_key(KeyId=key_id),
        lambda: kms.schedule_key_deletion(KeyId=key_id),
        lambda: kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "a", "TagValue": "b"}]),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) == "KMSInvalidStateException"
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as exc:
        kms.cancel_key_deletion(KeyId=other)
    assert code(exc) == "KMSInvalidStateException"


def test_deletion_after_the_waiting_period_shreds_what_the_key_encrypted(kms, server) -> None:
    clock = Clock(time.time())
    server.registry.ctx.clock = clock
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/doomed", TargetKeyId=key_id)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"payload")["CiphertextBlob"]
    deletion = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)["DeletionDate"]
    assert abs(deletion.timestamp() - (clock.now + 7 * DAY)) < 2
    clock.now += 7 * DAY + 1
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob)
    assert code(exc) == "NotFoundException" and "destroyed" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        kms.describe_key(KeyId=key_id)
    assert code(exc) == "NotFoundException"
    assert key_id not in [k["KeyId"] for k in kms.list_keys()["Keys"]]
    assert kms.list_aliases()["Aliases"] == []
    # and it cannot come back
    with pytest.raises(ClientError) as exc:
        kms.cancel_key_deletion(KeyId=key_id)
    assert code(exc) == "NotFoundException"


def test_automatic_rotation_with_the_clock(kms, server) -> None:
    clock = Clock(time.time())
    server.registry.ctx.clock = clock
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    old = kms.encrypt(KeyId=key_id, Plaintext=b"old")["CiphertextBlob"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    clock.now += 91 * DAY
    assert server.app.kms.upkeep() == (0, 1)
    new = kms.encrypt(KeyId=key_id, Plaintext=b"new")["CiphertextBlob"]
    assert old[37:41] == b"\0\0\0\1" and new[37:41] == b"\0\0\0\2"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"new"


def test_a_restricted_user_and_the_key_policy(aws, kms) -> None:
    iam = aws("iam")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    user = aws("kms", *new_user(iam, "reader", allow("kms:DescribeKey")))
    assert user.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    for call in (
        lambda: user.encrypt(KeyId=key_id, Plaintext=b"x"),
        lambda: user.create_key(),
        lambda: user.disable_key(KeyId=key_id),
        lambda: user.list_keys(),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) == "AccessDeniedException"
        assert f"arn:aws:iam::{ACCOUNT}:user/reader" in exc.value.response["Error"]["Message"]
    # a key policy that does not grant the account: IAM policies do not apply, even kms:* for the user
    user2 = aws("kms", *new_user(iam, "admin", allow("kms:*")))
    assert user2.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"] == arn
    only_root = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:PrincipalType": "Account"}},
                }
            ],
        }
    )
    kms.put_key_policy(KeyId=key_id, Policy=only_root)
    with pytest.raises(ClientError) as exc:
        user2.encrypt(KeyId=key_id, Plaintext=b"x")
    assert code(exc) == "AccessDeniedException"
    # kms:EncryptionContext conditions in an IAM policy
    root_grant = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    kms.put_key_policy(KeyId=key_id, Policy=json.dumps({"Version": "2012-10-17", "Statement": [root_grant]}))
    iam.put_user_policy(
        UserName="reader",
        PolicyName="p",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "kms:Encrypt",
                        "Resource": arn,
                        "Condition": {"StringEquals": {"kms:EncryptionContext:app": "web"}},
                    }
                ],
            }
        ),
    )
    assert user.encrypt(KeyId=arn, Plaintext=b"x", EncryptionContext={"app": "web"})
    with pytest.raises(ClientError) as exc:
        user.encrypt(KeyId=arn, Plaintext=b"x", EncryptionContext={"app": "db"})
    assert code(exc) == "AccessDeniedException"


def test_cross_account_needs_the_key_policy_and_the_callers_iam_policy(aws, kms, server) -> None:
    other_root = aws("kms", *server.identity.credentials.create_account(OTHER))
    key = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"shared")["CiphertextBlob"]
    with pytest.raises(ClientError) as exc:
        other_root.decrypt(CiphertextBlob=blob)
    assert code(exc) == "AccessDeniedException"
    with pytest.raises(ClientError) as exc:  # a bare key id names the caller's own keys
        other_root.describe_key(KeyId=key["KeyId"])
    assert code(exc) == "NotFoundException"
    policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"])["Policy"])
    policy["Statement"].append(
        {
            "Sid": "other",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": "*",
        }
    )
    kms.put_key_policy(KeyId=key["KeyId"], Policy=json.dumps(policy))
    assert other_root.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
    assert other_root.describe_key(KeyId=key["Arn"])["KeyMetadata"]["AWSAccountId"] == ACCOUNT
    with pytest.raises(ClientError) as exc:
        other_root.encrypt(KeyId=key["Arn"], Plaintext=b"x")
    assert code(exc) == "AccessDeniedException"


def test_cross_account_user_needs_both_sides(aws, kms, server) -> None:
    other_key = server.identity.credentials.create_account(OTHER)
    other_iam = aws("iam", *other_key)
    key = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"shared")["CiphertextBlob"]
    policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"])["Policy"])
    policy["Statement"].append(
        {"Sid": "other", "Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": "kms:Decrypt", "Resource": "*"}
    )
    kms.put_key_policy(KeyId=key["KeyId"], Policy=json.dumps(policy))
    user = aws("kms", *new_user(other_iam, "consumer"))
    with pytest.raises(ClientError) as exc:
        user.decrypt(CiphertextBlob=blob)
    assert code(exc) == "AccessDeniedException"
    other_iam.put_user_policy(UserName="consumer", PolicyName="p", PolicyDocument=allow("kms:Decrypt", key["Arn"]))
    assert user.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"


def test_the_aws_managed_ecr_key(kms) -> None:
    meta = kms.describe_key(KeyId="alias/aws/ecr")["KeyMetadata"]  # created on first use, as AWS does
    assert meta["KeyManager"] == "AWS" and meta["KeyState"] == "Enabled"
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"]
    with pytest.raises(ClientError) as exc:  # only through ECR
        kms.encrypt(KeyId="alias/aws/ecr", Plaintext=b"x")
    assert code(exc) == "AccessDeniedException"
    for call in (
        lambda: kms.disable_key(KeyId=meta["KeyId"]),
        lambda: kms.schedule_key_deletion(KeyId=meta["KeyId"]),
        lambda: kms.put_key_policy(KeyId=meta["KeyId"], Policy="{}"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) in ("AccessDeniedException", "UnsupportedOperationException")
    with pytest.raises(ClientError) as exc:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    assert code(exc) == "InvalidAliasNameException"


def test_unsupported_parameters_and_operations_are_refused(kms, server) -> None:
    for kwargs in (
        {"KeySpec": "RSA_2048"},
        {"KeyUsage": "SIGN_VERIFY"},
        {"Origin": "EXTERNAL"},
        {"CustomKeyStoreId": "cks-1234567890"},
        {"MultiRegion": True},
        {"KeySpec": "HMAC_256"},
    ):
        with pytest.raises(ClientError) as exc:
            kms.create_key(**kwargs)
        assert code(exc) == "UnsupportedOperationException", kwargs
        assert "not supported" in exc.value.response["Error"]["Message"]
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    for call in (
        lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x", GrantTokens=["t"]),
        lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256"),
        lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", DryRun=True),
        lambda: kms.create_grant(KeyId=key_id, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:root", Operations=["Decrypt"]),
        lambda: kms.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) == "UnsupportedOperationException"
    assert kms.list_keys()["Keys"]  # nothing was created by the refused calls beyond the one key
    assert len(kms.list_keys()["Keys"]) == 1


def test_hostile_inputs(kms, server) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    for bad in (
        "nope",
        "alias/none",
        "arn:aws:kms:eu-west-1:000000000000:key/" + key_id,
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/00000000-0000-0000-0000-000000000000",
        "arn:aws:kms:x",
        "x" * 2048,
        "../../etc/passwd",
        "alias/" + "a" * 250,
    ):
        with pytest.raises(ClientError) as exc:
            kms.encrypt(KeyId=bad, Plaintext=b"x")
        assert code(exc) == "NotFoundException", bad
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    raw = unvalidated(server, "kms")
    with pytest.raises(ClientError) as exc:
        raw.encrypt(KeyId=key_id, Plaintext=b"x" * 4097)
    assert code(exc) == "ValidationException" and "4096" in exc.value.response["Error"]["Message"]
    assert kms.encrypt(KeyId=key_id, Plaintext=b"x" * 4096)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"a": "1"})["CiphertextBlob"]
    for ctx in ({"a": "2"}, {}, {"a": "1", "b": "2"}, {"A": "1"}):
        with pytest.raises(ClientError) as exc:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
        assert code(exc) == "InvalidCiphertextException"
    for corrupt in (
        blob[:-1],
        blob[:5],
        b"\x00" * 200,
        bytes([blob[0]]) + b"z" * 36 + blob[37:],
        blob[:-1] + bytes([blob[-1] ^ 0x80]),
    ):
        with pytest.raises(ClientError) as exc:
            kms.decrypt(CiphertextBlob=corrupt, EncryptionContext={"a": "1"})
        assert code(exc) == "InvalidCiphertextException"
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "1"}, KeyId=other)
    assert code(exc) == "IncorrectKeyException"
    with pytest.raises(ClientError) as exc:
        kms.generate_data_key(KeyId=key_id)
    assert code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", NumberOfBytes=32)
    assert code(exc) == "ValidationException"
    for days in (6, 31):
        with pytest.raises(ClientError) as exc:
            raw.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=days)
        assert code(exc) == "ValidationException"
    for name in ("alias/bad name", "notalias/x", "alias/aws/ecr"):
        with pytest.raises(ClientError) as exc:
            raw.create_alias(AliasName=name, TargetKeyId=key_id)
        assert code(exc) in ("ValidationException", "InvalidAliasNameException"), name
    kms.create_alias(AliasName="alias/once", TargetKeyId=key_id)
    with pytest.raises(ClientError) as exc:
        kms.create_alias(AliasName="alias/once", TargetKeyId=key_id)
    assert code(exc) == "AlreadyExistsException"
    for policy in ("not json", "{}", json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*"}]}), "[" * 5000):
        with pytest.raises(ClientError) as exc:
            raw.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
        assert code(exc) in ("MalformedPolicyDocumentException", "ValidationException")
    with pytest.raises(ClientError) as exc:
        kms.get_key_policy(KeyId=key_id, PolicyName="other")
    assert code(exc) == "NotFoundException"
    with pytest.raises(ClientError) as exc:
        raw.tag_resource(KeyId=key_id, Tags=[{"TagKey": "aws:x", "TagValue": "y"}])
    assert code(exc) == "TagException"
    with pytest.raises(ClientError) as exc:
        kms.list_keys(Marker="zzz")
    assert code(exc) == "InvalidMarkerException"


def test_huge_and_malformed_json_bodies(server) -> None:
    """Raw requests: the signature is checked before the body is parsed, so these are unsigned; they must be refused
    cleanly with a JSON error, never a 5xx."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    creds = boto3.Session(
        aws_access_key_id="AKIATESTROOT00000001", aws_secret_access_key="test-root-secret-key-0000000000000000000"
    ).get_credentials()

    def send(body: bytes, target: str = "TrentService.Encrypt") -> httpx.Response:
        request = AWSRequest(
            "POST",
            server.url + "/",
            data=body,
            headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
        )
        SigV4Auth(creds, "kms", "us-east-1").add_auth(request)
        return httpx.post(server.url + "/", content=body, headers=dict(request.headers), timeout=60)

    for body in (
        b"{",
        b"[]",
        b'{"KeyId": "x", "Plaintext": "not base64 !!"}',
        b'{"KeyId": 5, "Plaintext": "eA=="}',
        b'{"KeyId": "x", "Plaintext": {}}',
        b"[" * 100_000,
        b'{"KeyId": "' + b"a" * 3_000_000 + b'", "Plaintext": "eA=="}',
        b'{"KeyId": "\\ud800", "Plaintext": "eA=="}',
    ):
        response = send(body)
        assert 400 <= response.status_code < 500, (body[:40], response.status_code)
        assert "__type" in response.json()
    response = send(b"{}", "TrentService.NoSuchOperation")
    assert response.status_code == 400 and response.json()["__type"] == "UnknownOperationException"
    # signed for kms, sent to ECR's target: the signature's service must match
    request = AWSRequest(
        "POST",
        server.url + "/",
        data=b"{}",
        headers={"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(creds, "ecr", "us-east-1").add_auth(request)
    response = httpx.post(server.url + "/", content=b"{}", headers=dict(request.headers), timeout=30)
    assert response.status_code in (400, 403) and response.json()["__type"].endswith("SignatureException")


def test_kms_events_are_audited_without_secrets(kms, server) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    data = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext={"repo": "app"})
    kms.decrypt(CiphertextBlob=data["CiphertextBlob"], EncryptionContext={"repo": "app"})
    kms.disable_key(KeyId=key_id)
    with pytest.raises(ClientError):
        kms.decrypt(CiphertextBlob=data["CiphertextBlob"], EncryptionContext={"repo": "app"})
    server.identity.audit.flush()
    rows = [r for r in server.identity.audit.query(AuditQuery(limit=500)) if r["event"] == "kms"]
    seen = {(r["action"], r["decision"]) for r in rows}
    assert {
        ("kms:CreateKey", "allow"),
        ("kms:GenerateDataKey", "allow"),
        ("kms:Decrypt", "allow"),
        ("kms:DisableKey", "allow"),
        ("kms:Decrypt", "error"),
    } <= seen
    for r in rows:
        record = json.loads(r["reason"])
        assert record["eventSource"] == "kms.amazonaws.com"
        for secret in (data["Plaintext"], data["CiphertextBlob"]):
            assert base64.b64encode(secret).decode() not in r["reason"] and secret.hex() not in r["reason"]
    failed = next(r for r in rows if r["decision"] == "error")
    assert json.loads(failed["reason"])["errorCode"] == "DisabledException"


def test_the_aws_cli(aws_cli, tmp_path) -> None:
    rc, out, err = aws_cli("kms", "create-key", "--description", "cli key")
    assert rc == 0, err
    key_id = out["KeyMetadata"]["KeyId"]
    assert aws_cli("kms", "create-alias", "--alias-name", "alias/cli", "--target-key-id", key_id)[0] == 0
    assert aws_cli("kms", "describe-key", "--key-id", "alias/cli")[1]["KeyMetadata"]["KeyId"] == key_id
    (tmp_path / "plain").write_bytes(b"hello from the cli")
    rc, out, err = aws_cli(
        "kms",
        "encrypt",
        "--key-id",
        "alias/cli",
        "--plaintext",
        f"fileb://{tmp_path / 'plain'}",
        "--encryption-context",
        "app=web",
    )
    assert rc == 0, err
    (tmp_path / "blob").write_bytes(base64.b64decode(out["CiphertextBlob"]))
    rc, out, err = aws_cli(
        "kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}", "--encryption-context", "app=web"
    )
    assert rc == 0, err
    assert base64.b64decode(out["Plaintext"]) == b"hello from the cli"
    rc, out, err = aws_cli(
        "kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}", "--encryption-context", "app=db"
    )
    assert rc != 0 and "InvalidCiphertextException" in err
    rc, out, err = aws_cli("kms", "generate-data-key", "--key-id", key_id, "--key-spec", "AES_256")
    assert rc == 0 and len(base64.b64decode(out["Plaintext"])) == 32
    assert aws_cli("kms", "disable-key", "--key-id", key_id)[0] == 0
    rc, _, err = aws_cli("kms", "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plain'}")
    assert rc != 0 and "DisabledException" in err
    assert aws_cli("kms", "enable-key", "--key-id", key_id)[0] == 0
    assert aws_cli("kms", "enable-key-rotation", "--key-id", key_id)[0] == 0
    assert aws_cli("kms", "get-key-rotation-status", "--key-id", key_id)[1]["KeyRotationEnabled"] is True
    assert aws_cli("kms", "rotate-key-on-demand", "--key-id", key_id)[0] == 0
    rc, out, err = aws_cli(
        "kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}", "--encryption-context", "app=web"
    )
    assert rc == 0, err  # the old version still decrypts after rotation
    assert aws_cli("kms", "tag-resource", "--key-id", key_id, "--tags", "TagKey=a,TagValue=b")[0] == 0
    assert aws_cli("kms", "list-resource-tags", "--key-id", key_id)[1]["Tags"] == [{"TagKey": "a", "TagValue": "b"}]
    rc, out, err = aws_cli("kms", "schedule-key-deletion", "--key-id", key_id, "--pending-window-in-days", "7")
    assert rc == 0 and out["KeyState"] == "PendingDeletion", err
    assert aws_cli("kms", "cancel-key-deletion", "--key-id", key_id)[0] == 0
    assert [a["AliasName"] for a in aws_cli("kms", "list-aliases")[1]["Aliases"]] == ["alias/cli"]
    assert aws_cli("kms", "list-keys")[1]["Keys"][0]["KeyId"] == key_id
    rc, _, err = aws_cli("kms", "create-key", "--key-spec", "RSA_2048", "--key-usage", "ENCRYPT_DECRYPT")
    assert rc != 0 and "UnsupportedOperationException" in err


def test_a_marker_of_non_ascii_digits_is_an_invalid_marker(kms, server) -> None:
    """'²' is a digit to str.isdigit but not to int(): it was a 500 (the model's Marker pattern allows U+00B2)."""
    kms.create_key()
    raw = unvalidated(server, "kms")
    for marker in ("\u00b2", "\u00b9", "1\u00b2"):
        with pytest.raises(ClientError) as exc:
            raw.list_keys(Marker=marker)
        assert code(exc) == "InvalidMarkerException", marker
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_tag_resource_with_no_tags_changes_nothing(kms) -> None:
    """An empty Tags list passes the model (no minimum): it was an empty INSERT, a 500."""
    key_id = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=key_id, Tags=[])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "team", "TagValue": "a"}]


def test_update_alias_names_an_alias_not_a_key(kms) -> None:
    """UpdateAlias with a key id or a key ARN as AliasName resolved it as a key and answered 200 having changed
    nothing (the UPDATE matched no alias row)."""
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    other = kms.create_key()["KeyMetadata"]
    for name in (key_id, other["KeyId"]):
        with pytest.raises(ClientError) as exc:
            kms.update_alias(AliasName=name, TargetKeyId=other["KeyId"])
        assert code(exc) == "ValidationException", name
    kms.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    kms.update_alias(AliasName="alias/app", TargetKeyId=other["KeyId"])
    assert kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == other["KeyId"]


def test_concurrent_alias_creation_and_tagging_never_answer_500(aws, server) -> None:
    """Two requests (two nodes on PostgreSQL) racing to create the same alias — or the aws/ecr managed key on first
    use — or to tag a key with the same key: each checked and then inserted, so the loser hit the primary key and
    answered KMSInternalException (500). One wins; the others get AlreadyExistsException, or their tag applies."""
    import threading

    import boto3
    from botocore.config import Config

    from tests.conftest import ROOT_KEY_ID, ROOT_SECRET

    def client():  # no retry: a retried 500 would hide the first answer
        return boto3.client(
            "kms",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id=ROOT_KEY_ID,
            aws_secret_access_key=ROOT_SECRET,
            config=Config(retries={"mode": "legacy", "total_max_attempts": 1}),
        )

    key_id = client().create_key()["KeyMetadata"]["KeyId"]

    def race(call) -> list[str]:
        clients = [client() for _ in range(6)]
        barrier = threading.Barrier(len(clients))
        answers: list[str] = []

        def run(kms) -> None:
            barrier.wait()
            try:
                call(kms)
                answers.append("OK")
            except ClientError as exc:
                answers.append(code_of(exc))

        threads = [threading.Thread(target=run, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return answers

    def code_of(exc: ClientError) -> str:
        return exc.response["Error"]["Code"]

    for round_ in range(3):
        alias, tags = f"alias/race{round_}", [{"TagKey": f"t{round_}", "TagValue": "v"}]
        answers = race(lambda kms, alias=alias: kms.create_alias(AliasName=alias, TargetKeyId=key_id))
        assert sorted(answers) == ["AlreadyExistsException"] * 5 + ["OK"], answers
        answers = race(lambda kms, tags=tags: kms.tag_resource(KeyId=key_id, Tags=tags))
        assert answers == ["OK"] * 6, answers
    assert race(lambda kms: kms.describe_key(KeyId="alias/aws/ecr")) == ["OK"] * 6
    assert len([a for a in client().list_aliases()["Aliases"] if a["AliasName"] == "alias/aws/ecr"]) == 1


def test_create_key_honours_request_tag_and_key_spec_conditions(aws) -> None:
    """CreateKey's IAM authorization carried no condition keys: a policy allowing it only with a tag
    (aws:RequestTag/…, aws:TagKeys) or for a key spec (kms:KeySpec…) never matched, one denying untagged creation
    (Null aws:RequestTag/… true) denied tagged requests too."""
    iam = aws("iam")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "kms:CreateKey",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"aws:RequestTag/team": "a", "kms:KeySpec": "SYMMETRIC_DEFAULT"},
                    "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]},
                },
            },
            {
                "Effect": "Deny",
                "Action": "kms:CreateKey",
                "Resource": "*",
                "Condition": {"Null": {"aws:RequestTag/team": "true"}},
            },
        ],
    }
    user = aws("kms", *new_user(iam, "tagged-creator", json.dumps(policy)))
    created = user.create_key(Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]
    assert created["KeyState"] == "Enabled"
    for tags in ([{"TagKey": "team", "TagValue": "b"}], [], [{"TagKey": "other", "TagValue": "a"}]):
        with pytest.raises(ClientError) as exc:
            user.create_key(Tags=tags)
        assert code(exc) == "AccessDeniedException", tags


def test_key_management_is_refused_across_accounts_even_when_the_key_policy_allows_it(aws, kms, server) -> None:
    """AWS KMS lets another account use a key (cryptographic operations, DescribeKey, GetKeyRotationStatus) when its
    policy allows, but never manage it: a policy granting another account kms:* let that account disable the key,
    schedule its deletion, replace its policy (locking its owner out), tag it and alias it."""
    other_root = aws("kms", *server.identity.credentials.create_account(OTHER))
    key = kms.create_key()["KeyMetadata"]
    policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"])["Policy"])
    policy["Statement"].append(
        {
            "Sid": "other",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    kms.put_key_policy(KeyId=key["KeyId"], Policy=json.dumps(policy))
    arn = key["Arn"]
    blob = other_root.encrypt(KeyId=arn, Plaintext=b"x")["CiphertextBlob"]  # use: allowed
    assert other_root.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert other_root.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key["KeyId"]
    assert "KeyRotationEnabled" in other_root.get_key_rotation_status(KeyId=arn)
    for call in (
        lambda: other_root.disable_key(KeyId=arn),
        lambda: other_root.enable_key(KeyId=arn),
        lambda: other_root.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7),
        lambda: other_root.cancel_key_deletion(KeyId=arn),
        lambda: other_root.put_key_policy(KeyId=arn, PolicyName="default", Policy=default_policy(OTHER)),
        lambda: other_root.get_key_policy(KeyId=arn, PolicyName="default"),
        lambda: other_root.update_key_description(KeyId=arn, Description="mine"),
        lambda: other_root.tag_resource(KeyId=arn, Tags=[{"TagKey": "a", "TagValue": "b"}]),
        lambda: other_root.untag_resource(KeyId=arn, TagKeys=["a"]),
        lambda: other_root.list_resource_tags(KeyId=arn),
        lambda: other_root.enable_key_rotation(KeyId=arn),
        lambda: other_root.disable_key_rotation(KeyId=arn),
        lambda: other_root.rotate_key_on_demand(KeyId=arn),
        lambda: other_root.create_alias(AliasName="alias/theirs", TargetKeyId=arn),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) == "NotFoundException"
    meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["Description"] == ""
    assert kms.get_key_policy(KeyId=key["KeyId"])["Policy"] == json.dumps(policy)
    assert other_root.list_aliases()["Aliases"] == []


def default_policy(account: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
