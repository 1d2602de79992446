"""parse_policy: the grammar, per-kind rules and clear messages for malformed documents."""

from __future__ import annotations

import json

import pytest

from soko.iam.policy import MalformedPolicy, PolicyKind, parse_policy, parse_policy_document

ID, RES, REG, TRUST = PolicyKind.IDENTITY, PolicyKind.RESOURCE, PolicyKind.REGISTRY, PolicyKind.TRUST
REPO_ARN = "arn:aws:ecr:us-east-1:111122223333:repository/team/app"


def doc(*statements: dict, version: str | None = "2012-10-17", **top: object) -> str:
    body: dict[str, object] = {"Statement": list(statements), **top}
    if version is not None:
        body["Version"] = version
    return json.dumps(body)


def allow(**extra: object) -> dict:
    return {"Effect": "Allow", "Action": "ecr:BatchGetImage", **extra}


def test_identity_policy_parses() -> None:
    p = parse_policy(doc(allow(Sid="Pull", Resource=REPO_ARN)), ID)
    assert p.kind is ID and p.version == "2012-10-17" and p.id is None
    (st,) = p.statements
    assert st.sid == "Pull" and st.effect == "Allow" and st.index == 1 and st.principals is None


def test_single_statement_object_and_missing_version() -> None:
    p = parse_policy(json.dumps({"Statement": allow(Resource="*")}), ID)
    assert p.version == "2008-10-17" and len(p.statements) == 1


def test_bytes_input_and_id() -> None:
    p = parse_policy(doc(allow(Resource="*"), Id="my-policy").encode(), ID)
    assert p.id == "my-policy"


def test_repository_policy_resource_is_optional_and_sids_may_repeat() -> None:
    p = parse_policy(
        doc(allow(Sid="new statement", Principal="*"), allow(Sid="new statement", Principal={"AWS": "*"})), RES
    )
    assert [s.sid for s in p.statements] == ["new statement", "new statement"]
    assert p.statements[0].resources is None


def test_registry_policy_parses() -> None:
    p = parse_policy(
        doc(
            {
                "Sid": "ReplicationAccess",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
                "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                "Resource": "arn:aws:ecr:us-west-2:111122223333:repository/*",
            }
        ),
        REG,
    )
    assert p.actions_mentioned() == {"ecr:CreateRepository", "ecr:ReplicateImage"}


def test_actions_mentioned_includes_not_action_as_written() -> None:
    p = parse_policy(
        doc(
            {"Effect": "Allow", "Action": ["ecr:*", "ECR:putimage"], "Resource": "*"},
            {"Effect": "Deny", "NotAction": "ecr:ReplicateImage", "Resource": "*"},
        ),
        ID,
    )
    assert p.actions_mentioned() == {"ecr:*", "ECR:putimage", "ecr:ReplicateImage"}


def test_trust_policy_parses() -> None:
    p = parse_policy(
        doc(
            {
                "Effect": "Allow",
                "Principal": {
                    "AWS": ["arn:aws:iam::111122223333:root", "444455556666"],
                    "Service": "ec2.amazonaws.com",
                },
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {"StringEquals": {"sts:ExternalId": "xyz"}},
            }
        ),
        TRUST,
    )
    assert p.statements[0].principals is not None


MALFORMED: list[tuple[str, PolicyKind, str]] = [
    ("", ID, "not valid JSON"),
    ("{", ID, "not valid JSON"),
    ("[]", ID, "must be a JSON object"),
    ('"text"', ID, "must be a JSON object"),
    ("null", RES, "must be a JSON object"),
    ('{"Statement": [], "Version": "2012-10-17"}', ID, "Statement must not be empty"),
    ('{"Version": "2012-10-17"}', ID, "must contain Statement"),
    ('{"Version": "2012-10-18", "Statement": {}}', ID, "Version must be"),
    ('{"Version": 2012, "Statement": {}}', ID, "Version must be"),
    ('{"Id": 5, "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}', ID, "Id must be a string"),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}, "Extra": 1}', ID, "unknown element 'Extra'"),
    ('{"Statement": {"Effect": "Allow", "Effect": "Deny", "Action": "*", "Resource": "*"}}', ID, "duplicate key"),
    (
        '{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": '
        '{"NumericEquals": {"k": NaN}}}}',
        ID,
        "NaN is not a number",
    ),
    ('{"Statement": [1]}', ID, "Statement 1: must be an object"),
    (
        doc(allow(Resource="*"), {"Effect": "allow", "Action": "*", "Resource": "*"}),
        ID,
        "Statement 2: Effect must be Allow or Deny",
    ),
    (doc({"Action": "*", "Resource": "*"}), ID, "Effect must be Allow or Deny"),
    (doc(allow(Resource="*", Foo=1)), ID, "Statement 1: unknown element 'Foo'"),
    (doc(allow(Resource="*", effect="Allow")), ID, "unknown element 'effect'"),
    (doc({"Effect": "Allow", "Resource": "*"}), ID, "Action or NotAction is required"),
    (doc(allow(Resource="*", NotAction="ecr:PutImage")), ID, "either Action or NotAction"),
    (doc({"Effect": "Allow", "Action": [], "Resource": "*"}), ID, "Action must not be empty"),
    (doc({"Effect": "Allow", "Action": 5, "Resource": "*"}), ID, "Action must be a non-empty string"),
    (doc({"Effect": "Allow", "Action": [""], "Resource": "*"}), ID, "Action must be a non-empty string"),
    (doc({"Effect": "Allow", "Action": "BatchGetImage", "Resource": "*"}), ID, "invalid action 'BatchGetImage'"),
    (doc({"Effect": "Allow", "Action": "ecr:Get Image", "Resource": "*"}), ID, "invalid action"),
    (doc(allow()), ID, "Resource or NotResource is required"),
    (doc(allow(Resource="*", NotResource="*")), ID, "either Resource or NotResource"),
    (doc(allow(Resource="repository/app")), ID, "must be an ARN or *"),
    (doc(allow(Resource={"arn": 1})), ID, "Resource must be a non-empty string"),
    (doc(allow(Resource="*", Principal="*")), ID, "identity policy cannot have Principal"),
    (doc(allow(Resource="*", NotPrincipal="*")), ID, "identity policy cannot have NotPrincipal"),
    (doc(allow(Sid="Has Space", Resource="*")), ID, "Sid must be alphanumeric"),
    (doc(allow(Sid=1, Resource="*")), ID, "Sid must be a string"),
    (doc(allow(Sid="A", Resource="*"), allow(Sid="A", Resource="*")), ID, "must be unique"),
    (doc(allow()), RES, "Principal is required"),
    (doc(allow()), REG, "Principal is required"),
    (doc(allow()), TRUST, "Principal is required"),
    (doc(allow(Principal="*", NotPrincipal="*")), RES, "either Principal or NotPrincipal"),
    (doc(allow(Principal="alice")), RES, 'Principal must be "*" or an object'),
    (doc(allow(Principal={})), RES, 'Principal must be "*" or an object'),
    (doc(allow(Principal={"IAM": "*"})), RES, "unknown principal type 'IAM'"),
    (doc(allow(Principal={"AWS": "alice"})), RES, "invalid principal 'alice'"),
    (doc(allow(Principal={"AWS": "arn:aws:iam::111122223333:user/*"})), RES, "invalid principal"),
    (doc(allow(Principal={"AWS": "12345"})), RES, "invalid principal"),
    (doc(allow(Principal={"AWS": []})), RES, "must not be empty"),
    (doc(allow(NotPrincipal={"AWS": "111122223333"})), RES, "NotPrincipal can only be used with Effect Deny"),
    (
        doc({"Effect": "Deny", "NotPrincipal": {"AWS": "111122223333"}, "Action": "*"}),
        TRUST,
        "trust policy cannot have NotPrincipal",
    ),
    (doc(allow(Principal="*", Resource="*")), TRUST, "trust policy cannot have Resource"),
    (doc(allow(Resource="*", Condition=[])), ID, "Condition must be an object"),
    (doc(allow(Resource="*", Condition={"StringEquals": "x"})), ID, "must map condition keys to values"),
    (doc(allow(Resource="*", Condition={"StringEquals": {}})), ID, "must map condition keys to values"),
    (doc(allow(Resource="*", Condition={"StringEqualz": {"k": "v"}})), ID, "unknown condition operator 'StringEqualz'"),
    (doc(allow(Resource="*", Condition={"stringequals": {"k": "v"}})), ID, "unknown condition operator"),
    (doc(allow(Resource="*", Condition={"ForSomeValues:StringEquals": {"k": "v"}})), ID, "unknown condition set"),
    (doc(allow(Resource="*", Condition={"NullIfExists": {"k": "true"}})), ID, "unknown condition operator"),
    (doc(allow(Resource="*", Condition={"ForAnyValue:Null": {"k": "true"}})), ID, "Null cannot take a set"),
    (doc(allow(Resource="*", Condition={"Null": {"k": "maybe"}})), ID, "values must be true or false"),
    (doc(allow(Resource="*", Condition={"StringEquals": {"k": []}})), ID, "needs at least one value"),
    (doc(allow(Resource="*", Condition={"StringEquals": {"k": None}})), ID, "must be strings, numbers or booleans"),
    (doc(allow(Resource="*", Condition={"StringEquals": {"k": {"a": 1}}})), ID, "must be strings, numbers"),
    (doc(allow(Resource="*", Condition={"StringEquals": {" ": "v"}})), ID, "empty condition key"),
    (doc(allow(Resource="*", Condition={"NumericLessThan": {"k": "ten"}})), ID, "'ten' is not a number"),
    (doc(allow(Resource="*", Condition={"DateLessThan": {"aws:CurrentTime": "yesterday"}})), ID, "is not a date"),
    (doc(allow(Resource="*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}})), ID, "not an IP address"),
]


@pytest.mark.parametrize(("text", "kind", "message"), MALFORMED)
def test_malformed(text: str, kind: PolicyKind, message: str) -> None:
    with pytest.raises(MalformedPolicy) as err:
        parse_policy(text, kind)
    assert message in str(err.value)


def test_messages_name_the_statement() -> None:
    with pytest.raises(MalformedPolicy, match=r"^Statement 3: Effect must be Allow or Deny$"):
        parse_policy(doc(allow(Resource="*"), allow(Resource="*"), {"Effect": "Maybe"}), ID)


def test_deep_nesting_is_refused_cleanly() -> None:
    with pytest.raises(MalformedPolicy):
        parse_policy("[" * 200_000 + "]" * 200_000, ID)
    deep = '{"Statement": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}"
    with pytest.raises(MalformedPolicy):
        parse_policy(deep, ID)


def test_huge_number_is_refused_cleanly() -> None:
    with pytest.raises(MalformedPolicy):
        parse_policy('{"Statement": ' + "9" * 10_000 + "}", ID)


def test_non_string_input_and_bad_utf8() -> None:
    with pytest.raises(MalformedPolicy):
        parse_policy(b"\xff\xfe", ID)
    with pytest.raises(MalformedPolicy):
        parse_policy(None, ID)  # type: ignore[arg-type]


def test_parse_policy_document_accepts_decoded_json() -> None:
    p = parse_policy_document({"Statement": [allow(Resource="*")]}, ID)
    assert len(p.statements) == 1
    with pytest.raises(MalformedPolicy):
        parse_policy_document({"Statement": [allow(Resource="*", Condition={1: {}})]}, ID)


def test_version_2008_keeps_variables_literal() -> None:
    p = parse_policy(doc(allow(Resource="arn:aws:ecr:*:*:repository/${aws:username}"), version="2008-10-17"), ID)
    assert p.statements[0].resources is not None
    assert p.statements[0].resources.templates == ()


def test_messages_stay_short_for_huge_values() -> None:
    with pytest.raises(MalformedPolicy) as err:
        parse_policy(doc({"Effect": "Allow", "Action": "x" * 10_000, "Resource": "*"}), ID)
    assert len(str(err.value)) < 200
