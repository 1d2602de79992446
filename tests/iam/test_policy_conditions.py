"""Condition operators, set qualifiers, IfExists, Null and policy variables, through the public evaluator."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from soko.iam.policy import AuthzRequest, PolicyKind, Principal, evaluate, parse_policy

ALICE = Principal("arn:aws:iam::111122223333:user/alice", "111122223333", "User", "AIDAALICE", "alice")
SESSION = Principal(
    "arn:aws:sts::111122223333:assumed-role/Builder/ci-42",
    "111122223333",
    "AssumedRole",
    "AROABUILDER:ci-42",
    None,
    "arn:aws:iam::111122223333:role/Builder",
)
REPO = "arn:aws:ecr:us-east-1:111122223333:repository/team/app"


def holds(
    condition: dict,
    context: Mapping[str, object] | None = None,
    *,
    principal: Principal = ALICE,
    version: str = "2012-10-17",
) -> bool:
    """Does an identity Allow guarded by `condition` grant the request?"""
    text = json.dumps(
        {
            "Version": version,
            "Statement": {"Effect": "Allow", "Action": "ecr:*", "Resource": "*", "Condition": condition},
        }
    )
    policy = parse_policy(text, PolicyKind.IDENTITY)
    request = AuthzRequest(principal, "ecr:BatchGetImage", REPO, "111122223333", dict(context or {}))
    return evaluate(request, identity_policies=[policy]).allowed


# (operator, policy value(s), context value, expected); the key is always "k" ("K" in the policy).
CASES: list[tuple[str, object, object, bool]] = [
    ("StringEquals", "prod", "prod", True),
    ("StringEquals", "prod", "Prod", False),
    ("StringEquals", ["dev", "prod"], "prod", True),  # values are ORed
    ("StringEquals", "123", 123, True),  # numbers compare as their text
    ("StringEquals", 123, "123", True),
    ("StringEquals", "true", True, True),
    ("StringEquals", "prod*", "production", False),  # no wildcards in StringEquals
    ("StringNotEquals", "prod", "dev", True),
    ("StringNotEquals", "prod", "prod", False),
    ("StringNotEquals", ["dev", "prod"], "prod", False),  # NOR: true only when no value matches
    ("StringNotEquals", ["dev", "prod"], "test", True),
    ("StringEqualsIgnoreCase", "PROD", "prod", True),
    ("StringEqualsIgnoreCase", "prod", "dev", False),
    ("StringNotEqualsIgnoreCase", "PROD", "prod", False),
    ("StringNotEqualsIgnoreCase", "PROD", "dev", True),
    ("StringLike", "prod-*", "prod-eu", True),
    ("StringLike", "prod-?", "prod-1", True),
    ("StringLike", "prod-?", "prod-12", False),
    ("StringLike", "*", "", True),
    ("StringLike", "a.b", "axb", False),  # regex metacharacters are literal
    ("StringLike", "Prod*", "production", False),  # case-sensitive
    ("StringNotLike", ["prod-*", "stage-*"], "dev-1", True),
    ("StringNotLike", ["prod-*", "stage-*"], "stage-1", False),
    ("ArnEquals", "arn:aws:iam::111122223333:role/Builder", "arn:aws:iam::111122223333:role/Builder", True),
    ("ArnEquals", "arn:aws:iam::*:role/*", "arn:aws:iam::111122223333:role/Builder", True),
    ("ArnLike", "arn:aws:iam::111122223333:role/*", "arn:aws:iam::111122223333:role/a/b", True),
    ("ArnLike", "arn:aws:iam::111122223333:role/*", "arn:aws:iam::444455556666:role/a", False),
    ("ArnLike", "arn:aws:*:*:*:*", "arn:aws:iam::1:user/x", True),
    ("ArnLike", "arn:aws:ecr:*:repository/x", "arn:aws:ecr:us-east-1:1:repository/x", False),  # 5 parts
    ("ArnLike", "arn:aws:ecr:us-*:*:repository/*", "arn:aws:ecr:us-east-1:1:repository/x:y", True),
    ("ArnLike", "arn:aws:ecr:*:*:repository/*", "not-an-arn", False),
    ("ArnNotLike", "arn:aws:iam::*:role/Admin", "arn:aws:iam::1:role/Builder", True),
    ("ArnNotEquals", "arn:aws:iam::*:role/Admin", "arn:aws:iam::1:role/Admin", False),
    ("NumericEquals", "10", 10, True),
    ("NumericEquals", 10, "10.0", True),
    ("NumericEquals", "10", "ten", False),
    ("NumericNotEquals", "10", 11, True),
    ("NumericNotEquals", "10", 10, False),
    ("NumericLessThan", "10", 9, True),
    ("NumericLessThan", "10", 10, False),
    ("NumericLessThanEquals", "10", 10, True),
    ("NumericGreaterThan", "10", 11, True),
    ("NumericGreaterThan", "10", "10", False),
    ("NumericGreaterThanEquals", "-1.5", "-1.5", True),
    ("NumericGreaterThan", "1", True, False),  # a boolean is not a number
    ("DateEquals", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00+00:00", True),
    ("DateEquals", "1704067200", "2024-01-01T00:00:00Z", True),  # epoch seconds
    ("DateEquals", 1704067200, "2024-01-01", True),
    ("DateNotEquals", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", True),
    ("DateLessThan", "2024-06-01T00:00:00Z", "2024-05-31T23:59:59Z", True),
    ("DateLessThan", "2024-06-01T00:00:00Z", "2024-06-01T00:00:00Z", False),
    ("DateLessThanEquals", "2024-06-01T00:00:00Z", "2024-06-01T00:00:00Z", True),
    ("DateGreaterThan", "2024-06-01T00:00:00Z", "2024-06-01T02:00:00+01:00", True),
    ("DateGreaterThanEquals", "2024-06-01", 1717200000, True),
    ("DateGreaterThan", "2024-06-01", "garbage", False),
    ("Bool", "true", True, True),
    ("Bool", "true", "true", True),
    ("Bool", "TRUE", "True", True),
    ("Bool", True, False, False),
    ("Bool", "false", False, True),
    ("BinaryEquals", "QmluYXJ5", "QmluYXJ5", True),
    ("IpAddress", "203.0.113.0/24", "203.0.113.7", True),
    ("IpAddress", "203.0.113.0/24", "203.0.114.7", False),
    ("IpAddress", "203.0.113.9", "203.0.113.9", True),  # a bare address is a /32
    ("IpAddress", ["10.0.0.0/8", "2001:db8::/32"], "2001:db8:1::5", True),
    ("IpAddress", "2001:db8::/32", "2001:db9::5", False),
    ("IpAddress", "0.0.0.0/0", "::1", False),  # versions never match each other
    ("IpAddress", "10.0.0.0/8", "not-an-ip", False),
    ("IpAddress", "10.1.2.3/8", "10.200.0.1", True),  # host bits in the CIDR are ignored
    ("NotIpAddress", "10.0.0.0/8", "192.0.2.1", True),
    ("NotIpAddress", "10.0.0.0/8", "10.0.0.1", False),
    ("NotIpAddress", "::/0", "2001:db8::1", False),
]


@pytest.mark.parametrize(("op", "values", "actual", "expected"), CASES)
def test_operator(op: str, values: object, actual: object, expected: bool) -> None:
    assert holds({op: {"K": values}}, {"k": actual}) is expected


POSITIVE = ["StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnLike", "ArnEquals", "Bool", "BinaryEquals"]
NEGATED = ["StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotLike", "ArnNotEquals"]


@pytest.mark.parametrize("op", [*POSITIVE, "NumericEquals", "DateEquals", "IpAddress"])
def test_missing_key_makes_positive_operators_false_and_if_exists_true(op: str) -> None:
    value = {"NumericEquals": "1", "DateEquals": "2024-01-01", "IpAddress": "10.0.0.0/8"}.get(op, "x")
    assert holds({op: {"k": value}}) is False
    assert holds({op + "IfExists": {"k": value}}) is True


@pytest.mark.parametrize("op", [*NEGATED, "NumericNotEquals", "DateNotEquals", "NotIpAddress"])
def test_missing_key_makes_negated_operators_true(op: str) -> None:
    value = {"NumericNotEquals": "1", "DateNotEquals": "2024-01-01", "NotIpAddress": "10.0.0.0/8"}.get(op, "x")
    assert holds({op: {"k": value}}) is True
    assert holds({op + "IfExists": {"k": value}}) is True


def test_if_exists_still_checks_a_present_key() -> None:
    assert holds({"StringEqualsIfExists": {"k": "a"}}, {"k": "a"}) is True
    assert holds({"StringEqualsIfExists": {"k": "a"}}, {"k": "b"}) is False
    assert holds({"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "192.0.2.1"}) is False


def test_null() -> None:
    assert holds({"Null": {"k": "true"}}) is True
    assert holds({"Null": {"k": "true"}}, {"k": "v"}) is False
    assert holds({"Null": {"k": "false"}}, {"k": "v"}) is True
    assert holds({"Null": {"k": False}}) is False
    assert holds({"Null": {"k": "true"}}, {"k": None}) is True  # None means absent
    assert holds({"Null": {"aws:TagKeys": "true"}}, {"aws:TagKeys": []}) is True


def test_keys_are_case_insensitive_values_are_not() -> None:
    assert holds({"StringEquals": {"AWS:SOURCEVPCE": "vpce-1"}}, {"aws:sourceVpce": "vpce-1"}) is True
    assert holds({"StringEquals": {"aws:SourceVpce": "VPCE-1"}}, {"aws:SourceVpce": "vpce-1"}) is False


def test_keys_and_operators_are_anded() -> None:
    cond = {"StringEquals": {"a": "1", "b": "2"}, "Bool": {"aws:SecureTransport": "true"}}
    assert holds(cond, {"a": "1", "b": "2", "aws:SecureTransport": True}) is True
    assert holds(cond, {"a": "1", "b": "2", "aws:SecureTransport": False}) is False
    assert holds(cond, {"a": "1", "aws:SecureTransport": True}) is False


TAGS = "aws:TagKeys"


@pytest.mark.parametrize(
    ("op", "request_values", "expected"),
    [
        ("ForAllValues:StringEquals", ["env", "team"], True),
        ("ForAllValues:StringEquals", ["env", "owner"], False),
        ("ForAllValues:StringEquals", [], True),  # empty set: true
        ("ForAllValues:StringEquals", None, True),  # missing key: true
        ("ForAnyValue:StringEquals", ["owner", "team"], True),
        ("ForAnyValue:StringEquals", ["owner"], False),
        ("ForAnyValue:StringEquals", [], False),
        ("ForAnyValue:StringEquals", None, False),
        ("ForAnyValue:StringEquals", "team", True),  # a single value behaves as a one-element set
        ("ForAllValues:StringLike", ["env", "team-x"], True),
        ("ForAllValues:StringNotEquals", ["owner", "cost"], True),  # no request value is listed
        ("ForAllValues:StringNotEquals", ["owner", "env"], False),
        ("ForAnyValue:StringNotEquals", ["env", "owner"], True),  # some request value is unlisted
        ("ForAnyValue:StringNotEquals", ["env", "team"], False),
        ("ForAnyValue:StringEqualsIfExists", None, True),
        ("StringEquals", ["owner", "team"], True),  # unqualified on a list: some value matches
        ("StringNotEquals", ["owner", "team"], False),  # unqualified negated: no value may match
        ("StringNotEquals", ["owner", "cost"], True),
    ],
)
def test_set_qualifiers(op: str, request_values: object, expected: bool) -> None:
    values = ["env", "team", "team-*"] if "Like" in op else ["env", "team"]
    context = {} if request_values is None else {TAGS: request_values}
    assert holds({op: {TAGS: values}}, context) is expected


def test_principal_keys_are_derived_from_the_caller() -> None:
    assert holds({"StringEquals": {"aws:username": "alice", "aws:PrincipalAccount": "111122223333"}}) is True
    assert holds({"StringEquals": {"aws:PrincipalType": "User", "aws:userid": "AIDAALICE"}}) is True
    assert holds({"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/alice"}}) is True
    # For a role session aws:PrincipalArn is the role, and there is no aws:username.
    role = {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/Builder"}}
    assert holds(role, principal=SESSION) is True
    assert holds({"Null": {"aws:username": "true"}}, principal=SESSION) is True
    assert holds({"StringEquals": {"aws:PrincipalType": "AssumedRole"}}, principal=SESSION) is True


def test_context_overrides_derived_keys() -> None:
    assert holds({"StringEquals": {"aws:username": "bob"}}, {"aws:username": "bob"}) is True


def test_current_time_defaults_to_now() -> None:
    assert holds({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}) is True
    assert holds({"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}) is False
    assert holds({"NumericGreaterThan": {"aws:EpochTime": "1577836800"}}) is True
    past = {"aws:CurrentTime": "2019-06-01T00:00:00Z"}
    assert holds({"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, past) is True


def test_policy_variables_in_conditions() -> None:
    cond = {"StringEquals": {"aws:ResourceTag/owner": "${aws:username}"}}
    assert holds(cond, {"aws:ResourceTag/owner": "alice"}) is True
    assert holds(cond, {"aws:ResourceTag/owner": "bob"}) is False
    # No aws:username for a role session: the value matches nothing.
    assert holds(cond, {"aws:ResourceTag/owner": "alice"}, principal=SESSION) is False
    with_default = {"StringEquals": {"aws:ResourceTag/owner": "${aws:username, 'nobody'}"}}
    assert holds(with_default, {"aws:ResourceTag/owner": "nobody"}, principal=SESSION) is True
    like = {"StringLike": {"k": "team-${aws:PrincipalTag/team}-*"}}
    assert holds(like, {"k": "team-red-1", "aws:PrincipalTag/team": "red"}) is True
    # A substituted value is literal even if it contains wildcard characters.
    assert holds(like, {"k": "team-red-1", "aws:PrincipalTag/team": "r*"}) is False
    arn = {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:user/*"}}
    assert holds(arn) is True


def test_special_variables_and_2008_documents() -> None:
    assert holds({"StringEquals": {"k": "a${*}b${?}${$}"}}, {"k": "a*b?$"}) is True
    assert holds({"StringLike": {"k": "a${*}"}}, {"k": "abc"}) is False
    # Version 2008-10-17 (or no Version) has no variables: the text is literal.
    assert holds({"StringEquals": {"k": "${aws:username}"}}, {"k": "${aws:username}"}, version="2008-10-17") is True
    assert holds({"StringEquals": {"k": "${aws:username}"}}, {"k": "alice"}, version="2008-10-17") is False


def test_malformed_variable_is_literal_text() -> None:
    assert holds({"StringEquals": {"k": "${}"}}, {"k": "${}"}) is True
    assert holds({"StringEquals": {"k": "${aws:username, nobody}"}}, {"k": "${aws:username, nobody}"}) is True
