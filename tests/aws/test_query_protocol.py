from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.handlers import json_decode_policies
from botocore.parsers import QueryParser
from botocore.serialize import create_serializer

from soko.aws.errors import AwsAuthError, InvalidRequest
from soko.aws.query_protocol import (
    auth_error_response,
    error_response,
    parse_form,
    parse_request,
    serialize_response,
)
from soko.aws.service_model import get_service_model

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def botocore_form(service: str, operation: str, params: dict[str, Any]) -> bytes:
    """The exact form body botocore would POST for this call."""
    model = get_service_model(service).operation_model(operation)
    request = create_serializer("query").serialize_to_request(params, model)
    return urlencode(request["body"]).encode()


def botocore_parse(service: str, operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    model = get_service_model(service).operation_model(operation)
    parsed = QueryParser().parse({"body": body, "headers": {}, "status_code": status}, model.output_shape)
    if service == "iam":
        json_decode_policies(parsed, model)  # what boto3 does after every IAM call
    return parsed


# --- requests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "operation", "params"),
    [
        (
            "iam",
            "CreateUser",
            {
                "UserName": "alice",
                "Path": "/eng/",
                "Tags": [{"Key": "team", "Value": "a b+c/d"}, {"Key": "k2", "Value": ""}],
            },
        ),
        ("iam", "ListUsers", {"PathPrefix": "/", "MaxItems": 10, "Marker": "abc"}),
        ("iam", "CreateAccessKey", {"UserName": "alice"}),
        ("iam", "ListAttachedUserPolicies", {"UserName": "alice"}),
        ("iam", "GetUserPolicy", {"UserName": "alice", "PolicyName": "p"}),
        (
            "iam",
            "PutUserPolicy",
            {
                "UserName": "alice",
                "PolicyName": "p",
                "PolicyDocument": json.dumps({"Version": "2012-10-17", "Statement": []}),
            },
        ),
        ("iam", "UntagUser", {"UserName": "alice", "TagKeys": ["a", "b", "c"]}),
        ("iam", "GetAccountSummary", {}),
        ("sts", "GetCallerIdentity", {}),
        (
            "sts",
            "AssumeRole",
            {
                "RoleArn": "arn:aws:iam::123456789012:role/r",
                "RoleSessionName": "sess",
                "DurationSeconds": 900,
                "PolicyArns": [{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
                "Tags": [{"Key": "k", "Value": "v"}],
                "TransitiveTagKeys": ["k"],
            },
        ),
    ],
)
def test_botocore_requests_parse_back(service: str, operation: str, params: dict[str, Any]) -> None:
    action, parsed = parse_request(service, parse_form(botocore_form(service, operation, params)))
    assert action == operation and parsed == params


def test_list_indices_follow_numeric_order() -> None:
    form = {
        "Action": "UntagUser",
        "Version": "2010-05-08",
        "UserName": "u",
        **{f"TagKeys.member.{i}": f"k{i}" for i in (10, 2, 1)},
    }
    assert parse_request("iam", form)[1]["TagKeys"] == ["k1", "k2", "k10"]


def test_empty_list() -> None:
    form = parse_form("Action=UntagUser&Version=2010-05-08&UserName=u&TagKeys=")
    assert parse_request("iam", form)[1]["TagKeys"] == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ("Version=2010-05-08", "MissingAction"),
        ("Action=LaunchRocket&Version=2010-05-08", "InvalidAction"),
        ("Action=CreateUser&Version=2011-06-15&UserName=u", "InvalidAction"),
        ("Action=CreateUser&Version=2010-05-08", "ValidationError"),
        ("Action=CreateUser&Version=2010-05-08&UserName=bad%20name", "ValidationError"),
        ("Action=ListUsers&Version=2010-05-08&MaxItems=0", "ValidationError"),
        ("Action=ListUsers&Version=2010-05-08&MaxItems=ten", "InvalidParameterValue"),
    ],
)
def test_bad_requests(form: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request("iam", parse_form(form))
    assert info.value.type_name == code


def test_iam_validation_message_uses_lower_camel_paths() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request("iam", parse_form("Action=CreateUser&Version=2010-05-08&UserName=bad%20name"))
    assert info.value.message == (
        "1 validation error detected: Value 'bad name' at 'userName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [\\w+=,.@-]+"
    )


def test_java_unicode_classes_in_patterns() -> None:
    ok = "Action=TagUser&Version=2010-05-08&UserName=u&Tags.member.1.Key=caf%C3%A9%201&Tags.member.1.Value=x"
    assert parse_request("iam", parse_form(ok))[1]["Tags"] == [{"Key": "café 1", "Value": "x"}]
    bad = "Action=TagUser&Version=2010-05-08&UserName=u&Tags.member.1.Key=a%21&Tags.member.1.Value=x"
    with pytest.raises(InvalidRequest):
        parse_request("iam", parse_form(bad))


# --- responses ------------------------------------------------------------------------------------------

USER = {
    "Path": "/",
    "UserName": "alice",
    "UserId": "AIDAEXAMPLE0000000000",
    "Arn": "arn:aws:iam::123456789012:user/alice",
    "CreateDate": WHEN,
    "Tags": [{"Key": "team", "Value": "a&b<c>"}],
}


@pytest.mark.parametrize(
    ("service", "operation", "result"),
    [
        ("iam", "CreateUser", {"User": USER}),
        (
            "iam",
            "ListUsers",
            {"Users": [USER, {**USER, "UserName": "bob", "Tags": []}], "IsTruncated": True, "Marker": "m"},
        ),
        ("iam", "ListUsers", {"Users": [], "IsTruncated": False}),
        (
            "iam",
            "CreateAccessKey",
            {
                "AccessKey": {
                    "UserName": "alice",
                    "AccessKeyId": "AKIAEXAMPLE",
                    "Status": "Active",
                    "SecretAccessKey": "s3cr3t/+=",
                    "CreateDate": WHEN,
                }
            },
        ),
        (
            "iam",
            "ListAttachedUserPolicies",
            {
                "AttachedPolicies": [{"PolicyName": "ReadOnly", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
                "IsTruncated": False,
            },
        ),
        (
            "iam",
            "GetUserPolicy",
            {
                "UserName": "alice",
                "PolicyName": "p",
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
                },
            },
        ),
        ("iam", "GetAccountSummary", {"SummaryMap": {"Users": 3, "Groups": 0}}),
        (
            "sts",
            "GetCallerIdentity",
            {"UserId": "AIDAEXAMPLE", "Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/alice"},
        ),
        (
            "sts",
            "AssumeRole",
            {
                "Credentials": {
                    "AccessKeyId": "ASIAEXAMPLE",
                    "SecretAccessKey": "x",
                    "SessionToken": "t",
                    "Expiration": datetime(2026, 1, 2, 4, 4, 5, 359000, tzinfo=UTC),
                },
                "AssumedRoleUser": {
                    "AssumedRoleId": "AROAEXAMPLE:s",
                    "Arn": "arn:aws:sts::123456789012:assumed-role/r/s",
                },
                "PackedPolicySize": 6,
            },
        ),
    ],
)
def test_responses_round_trip_through_botocore(service: str, operation: str, result: dict[str, Any]) -> None:
    wire = dict(result)
    if operation == "GetUserPolicy":
        wire["PolicyDocument"] = json.dumps(result["PolicyDocument"])
    body = serialize_response(service, operation, wire, "req-123")
    parsed = botocore_parse(service, operation, body)
    assert parsed.pop("ResponseMetadata")["RequestId"] == "req-123"
    assert parsed == result


def test_response_shape_matches_aws() -> None:
    body = serialize_response("iam", "CreateUser", {"User": USER}, "r1").decode()
    assert body.startswith(
        '<CreateUserResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><CreateUserResult><User>'
    )
    assert "<Tags><member><Key>team</Key><Value>a&amp;b&lt;c&gt;</Value></member></Tags>" in body
    assert "<CreateDate>2026-01-02T03:04:05Z</CreateDate>" in body
    assert body.endswith("<ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></CreateUserResponse>")
    sts = serialize_response("sts", "GetCallerIdentity", {"Account": "1"}, "r2").decode()
    assert sts.startswith('<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">')


def test_policy_documents_are_url_encoded_like_iam() -> None:
    body = serialize_response(
        "iam", "GetUserPolicy", {"UserName": "u", "PolicyName": "p", "PolicyDocument": '{"a": 1}'}, "r"
    )
    assert b"<PolicyDocument>%7B%22a%22%3A%201%7D</PolicyDocument>" in body


def test_operation_without_output() -> None:
    body = serialize_response("iam", "DeleteUser", None, "r9")
    assert body == (
        b'<DeleteUserResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
        b"<ResponseMetadata><RequestId>r9</RequestId></ResponseMetadata></DeleteUserResponse>"
    )
    assert botocore_parse("iam", "DeleteUser", body)["ResponseMetadata"]["RequestId"] == "r9"


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "code", "wire", "status"),
    [
        ("iam", "NoSuchEntityException", "NoSuchEntity", 404),
        ("iam", "NoSuchEntity", "NoSuchEntity", 404),
        ("iam", "EntityAlreadyExistsException", "EntityAlreadyExists", 409),
        ("iam", "LimitExceededException", "LimitExceeded", 409),
        ("iam", "ServiceFailureException", "ServiceFailure", 500),
        ("iam", "ValidationError", "ValidationError", 400),
        ("sts", "MalformedPolicyDocumentException", "MalformedPolicyDocument", 400),
        ("sts", "ExpiredTokenException", "ExpiredTokenException", 400),
    ],
)
def test_error_xml_is_read_by_botocore(service: str, code: str, wire: str, status: int) -> None:
    got_status, body = error_response(service, code, "User alice & <co> not found", "req-9")
    assert got_status == status
    parsed = botocore_parse(service, "GetCallerIdentity" if service == "sts" else "GetUser", body, status)
    assert parsed["Error"]["Code"] == wire
    assert parsed["Error"]["Message"] == "User alice & <co> not found"
    assert parsed["Error"]["Type"] == ("Receiver" if status >= 500 else "Sender")
    assert parsed["ResponseMetadata"]["RequestId"] == "req-9"


def test_auth_errors_use_query_codes() -> None:
    err = AwsAuthError("UnrecognizedClientException", "The security token included in the request is invalid.")
    status, body = auth_error_response("sts", err, "r")
    parsed = botocore_parse("sts", "GetCallerIdentity", body, status)
    assert (status, parsed["Error"]["Code"]) == (403, "InvalidClientTokenId")
    missing = AwsAuthError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
    status, body = auth_error_response("iam", missing, "r")
    assert status == 403 and b"<Message>Request is missing Authentication Token</Message>" in body
