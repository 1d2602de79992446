"""Property tests: parse_policy raises nothing but MalformedPolicy, and evaluate never raises on parsed policies."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soko.iam.policy import (
    AuthzRequest,
    MalformedPolicy,
    PolicyKind,
    Principal,
    evaluate,
    evaluate_trust,
    parse_policy,
)
from soko.iam.policy.conditions import OPERATORS

KINDS = list(PolicyKind)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=30,
)
# Cheaper garbage for the policy-shaped documents below.
junk = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


def _parse_or_malformed(text: str | bytes, kind: PolicyKind) -> None:
    try:
        parse_policy(text, kind)
    except MalformedPolicy as e:
        assert str(e)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(KINDS))
def test_arbitrary_json_never_crashes_the_parser(value: object, kind: PolicyKind) -> None:
    _parse_or_malformed(json.dumps(value), kind)


@settings(max_examples=200)
@given(st.one_of(st.text(), st.binary()), st.sampled_from(KINDS))
def test_arbitrary_text_never_crashes_the_parser(text: str | bytes, kind: PolicyKind) -> None:
    _parse_or_malformed(text, kind)


# Policy-shaped documents: the grammar's element names with values that are sometimes right and sometimes garbage,
# so the fuzzing reaches the deeper validation paths.
ACTIONS = ["*", "ecr:*", "ecr:BatchGetImage", "ECR:get*", "ecr:?utImage", "sts:AssumeRole", "bad", ""]
RESOURCES = [
    "*",
    "arn:aws:ecr:us-east-1:111122223333:repository/*",
    "arn:aws:ecr:*:*:repository/${aws:username}/*",
    "arn:aws:ecr:*:${aws:PrincipalAccount}:repository/${aws:PrincipalTag/team, 'x'}",
    "arn:aws:ecr:*:*:repository/${}",
    "arn:aws:ecr:*:*:repository/${*}${?}${$}",
    "repository/x",
]
PRINCIPALS = [
    "*",
    {"AWS": "*"},
    {"AWS": "111122223333"},
    {"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::444455556666:user/alice"]},
    {"AWS": "arn:aws:iam::111122223333:role/Builder"},
    {"AWS": "arn:aws:sts::111122223333:assumed-role/Builder/ci"},
    {"Service": "ecr.amazonaws.com"},
    {"Federated": "cognito-identity.amazonaws.com"},
    {"AWS": "nobody"},
]
CONDITION_VALUES = st.one_of(
    st.sampled_from(
        [
            "x",
            "true",
            "false",
            "10",
            "-3.5",
            "2024-01-01T00:00:00Z",
            "1704067200",
            "10.0.0.0/8",
            "2001:db8::/32",
            "192.0.2.1",
            "arn:aws:iam::*:role/*",
            "team-*",
            "${aws:username}",
            "${aws:PrincipalTag/t, 'd'}",
            "${*}",
        ]
    ),
    st.integers(),
    st.booleans(),
    junk,
)
operator_names = st.builds(
    lambda q, op, ie: q + op + ie,
    st.sampled_from(["", "", "ForAnyValue:", "ForAllValues:", "Bogus:"]),
    st.sampled_from([*OPERATORS, "Nope"]),
    st.sampled_from(["", "", "IfExists"]),
)
condition_keys = st.sampled_from(
    ["aws:SourceIp", "aws:username", "AWS:PrincipalArn", "aws:CurrentTime", "aws:TagKeys", "k", "aws:SecureTransport"]
)
conditions = st.dictionaries(
    operator_names,
    st.dictionaries(condition_keys, st.one_of(CONDITION_VALUES, st.lists(CONDITION_VALUES, max_size=3)), max_size=3),
    max_size=3,
)


def maybe_list(elements: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(elements, st.lists(elements, max_size=3))


statement = st.fixed_dictionaries(
    {},
    optional={
        "Sid": st.one_of(st.sampled_from(["", "A1", "has space"]), junk),
        "Effect": st.one_of(st.sampled_from(["Allow", "Deny"]), junk),
        "Principal": st.one_of(st.sampled_from(PRINCIPALS), junk),
        "NotPrincipal": st.sampled_from(PRINCIPALS),
        "Action": maybe_list(st.sampled_from(ACTIONS)),
        "NotAction": maybe_list(st.sampled_from(ACTIONS)),
        "Resource": st.one_of(maybe_list(st.sampled_from(RESOURCES)), junk),
        "NotResource": maybe_list(st.sampled_from(RESOURCES)),
        "Condition": st.one_of(conditions, junk),
        "Extra": junk,
    },
)
documents = st.fixed_dictionaries(
    {"Statement": st.one_of(statement, st.lists(statement, max_size=4))},
    optional={"Version": st.sampled_from(["2012-10-17", "2008-10-17", "2012-10-18"]), "Id": junk},
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.sampled_from(KINDS))
def test_policy_shaped_documents_never_crash_the_parser(doc: dict, kind: PolicyKind) -> None:
    _parse_or_malformed(json.dumps(doc), kind)


# Mostly valid documents, so that evaluate() is exercised on many different parsed policies.
FAMILY_VALUES = {
    "string": ["x", "alice", "${aws:username}", "${aws:PrincipalTag/t, 'd'}", "${*}", "10.1.2.3"],
    "like": ["team-*", "a?c", "*", "${aws:username}*", "alice"],
    "arn": ["arn:aws:iam::*:role/*", "arn:aws:iam::${aws:PrincipalAccount}:*", "arn:*:*:*:*:*", "nope"],
    "bool": ["true", "false", "${aws:SecureTransport}"],
    "binary": ["QmluYXJ5"],
    "ip": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1", "0.0.0.0/0"],
    "numeric": ["10", "-3.5", "0", "1e3"],
    "date": ["2024-01-01T00:00:00Z", "1704067200", "2030-01-01", "1999-12-31T23:00:00-05:00"],
    "null": ["true", "false"],
}


def _clause(op: str) -> st.SearchStrategy[tuple[str, dict]]:
    family = OPERATORS[op][0].split(":")[0].replace("string_ci", "string")
    name = st.just(op)
    if family != "null":
        name = st.builds(
            lambda q, e: q + op + e,
            st.sampled_from(["", "ForAnyValue:", "ForAllValues:"]),
            st.sampled_from(["", "IfExists"]),
        )
    values = st.sampled_from(FAMILY_VALUES[family])
    keys = st.dictionaries(condition_keys, st.one_of(values, st.lists(values, min_size=1, max_size=3)), min_size=1)
    return st.tuples(name, keys)


# Strategies are built once here: constructing them inside @composite draws dominates the run time.
valid_conditions = st.lists(st.one_of([_clause(op) for op in sorted(OPERATORS)]), min_size=1, max_size=3).map(dict)
valid_actions = st.lists(st.sampled_from(ACTIONS[:6]), min_size=1, max_size=3)
valid_resources = st.lists(st.sampled_from(RESOURCES[:6]), min_size=1, max_size=2)
valid_principals = st.sampled_from(PRINCIPALS[:7])


@st.composite
def valid_policy(draw: st.DrawFn) -> tuple[dict, PolicyKind]:
    kind = draw(st.sampled_from(KINDS))
    statements = []
    for _ in range(draw(st.integers(1, 3))):
        allow = draw(st.booleans())
        stmt: dict = {"Effect": "Allow" if allow else "Deny"}
        stmt["NotAction" if draw(st.booleans()) and not allow else "Action"] = draw(valid_actions)
        if kind is not PolicyKind.IDENTITY:
            key = "NotPrincipal" if not allow and kind is not PolicyKind.TRUST and draw(st.booleans()) else "Principal"
            stmt[key] = draw(valid_principals)
        if kind is PolicyKind.IDENTITY or (kind is not PolicyKind.TRUST and draw(st.booleans())):
            stmt["NotResource" if draw(st.booleans()) else "Resource"] = draw(valid_resources)
        if draw(st.booleans()):
            stmt["Condition"] = draw(valid_conditions)
        statements.append(stmt)
    version = draw(st.sampled_from(["2012-10-17", "2008-10-17"]))
    return {"Version": version, "Statement": statements}, kind


principals = st.sampled_from(
    [
        Principal("arn:aws:iam::111122223333:user/alice", "111122223333", "User", "AIDA1", "alice"),
        Principal("arn:aws:iam::111122223333:root", "111122223333", "Account", "111122223333"),
        Principal("arn:aws:iam::444455556666:root", "444455556666", "Account", "444455556666"),
        Principal(
            "arn:aws:sts::444455556666:assumed-role/Builder/ci",
            "444455556666",
            "AssumedRole",
            "AROA1:ci",
            None,
            "arn:aws:iam::444455556666:role/Builder",
        ),
        Principal("ecr.amazonaws.com", "111122223333", "Service", "ecr.amazonaws.com"),
    ]
)
context_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=30),
    st.sampled_from(["10.1.2.3", "2001:db8::1", "2024-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00", "0001-01-01"]),
    st.lists(st.text(max_size=10), max_size=3),
    st.floats(),
)
contexts = st.dictionaries(
    st.one_of(condition_keys, st.sampled_from(["aws:PrincipalTag/t", "sts:ExternalId"]), st.text(max_size=10)),
    context_values,
    max_size=6,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(valid_policy(), min_size=1, max_size=3),
    principals,
    st.sampled_from(["ecr:BatchGetImage", "ECR:PutImage", "sts:AssumeRole", "s3:GetObject"]),
    st.sampled_from(["*", "arn:aws:ecr:us-east-1:111122223333:repository/alice/x", "arn:aws:iam::1:role/R"]),
    st.sampled_from([None, "111122223333", "444455556666"]),
    contexts,
)
def test_evaluate_never_raises(docs, principal, action, resource, resource_account, context) -> None:
    parsed = []
    for doc, kind in docs:
        try:
            parsed.append(parse_policy(json.dumps(doc), kind))
        except MalformedPolicy:
            continue
    identity = [p for p in parsed if p.kind is PolicyKind.IDENTITY]
    resource_side = [p for p in parsed if p.kind is not PolicyKind.IDENTITY]
    request = AuthzRequest(principal, action, resource, resource_account, context)
    decision = evaluate(request, identity_policies=identity, resource_policies=resource_side)
    assert isinstance(decision.allowed, bool) and decision.reason
    assert not (decision.allowed and decision.explicit_deny)
    for p in resource_side:
        if p.kind is PolicyKind.TRUST:
            evaluate_trust(p, principal, context=context)
