"""Every condition key Soko populates, and AWS's absent-key rule for the others, through the real authorizer.

For each key: an Allow and a Deny whose condition matches the request and ones that do not, the `...IfExists` form,
and Null true/false. Policies are stored through the IAM directory and the repository through the registry, so the
keys come from where they come from in production (repository tags, the credential store, the request context).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pytest
from tests.iam.test_api_users import ACCOUNT

from soko.access import Principal, RequestContext
from soko.iam.directory import Directory
from soko.iam.policy.keys import request_tag_keys
from soko.iam.service import Identity
from soko.registry.models import RepoRef

REPO = "team/app"
REPO_ARN = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{REPO}"
USER_AGENT = "soko-test/1.0 (matrix)"
PUBLIC = RequestContext(source_ip="192.0.2.10", secure_transport=True, user_agent=USER_AGENT)
VPCE = RequestContext(source_ip="10.1.2.3", endpoint="vpce-0abc1234", user_agent=USER_AGENT)
TAGGING = request_tag_keys([{"Key": "team", "Value": "blue"}])


@dataclass
class World:
    identity: Identity
    directory: Directory
    user: Principal
    session: Principal

    def decide(self, statement: dict, *, principal: Principal | None = None, context=PUBLIC, action: str = "") -> bool:
        """Store ``statement`` (plus Allow ecr:* for Deny statements) as the principal's only policy and decide."""
        principal = principal or self.user
        kind, name = ("user", "alice") if principal.type == "User" else ("role", "deployer")
        statements = [statement]
        if statement["Effect"] == "Deny":
            statements.insert(0, {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"})
        doc = json.dumps({"Version": "2012-10-17", "Statement": statements})
        self.directory.put_inline_policy(ACCOUNT, kind, name, "p", doc)
        action = action or ("ecr:TagResource" if context is TAGGED_CONTEXT else "ecr:BatchGetImage")
        return self.identity.authorizer.decide(principal, action, REPO_ARN, ACCOUNT, context).allowed


TAGGED_CONTEXT = PUBLIC.with_extra({"condition_keys": TAGGING})


@pytest.fixture
def world(registry) -> World:
    identity = Identity(registry.ctx)
    directory = Directory(registry.ctx, identity.master, identity.credentials)
    registry.repositories.create(RepoRef(ACCOUNT, REPO), tags=[{"Key": "env", "Value": "prod"}])
    directory.create_user(ACCOUNT, "alice", tags=[{"Key": "team", "Value": "blue"}])
    row, _ = directory.create_access_key(ACCOUNT, "alice")
    user = identity.credentials.lookup(row["access_key_id"]).principal
    role_trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": user.arn}, "Action": "sts:AssumeRole"}],
    }
    directory.create_role(
        ACCOUNT, "deployer", "/", json.dumps(role_trust), None, None, [{"Key": "team", "Value": "ops"}]
    )
    directory.put_inline_policy(ACCOUNT, "user", "alice", "p", json.dumps(_allow("sts:AssumeRole")))
    session = directory.assume_role(user, f"arn:aws:iam::{ACCOUNT}:role/deployer", "s1", None, {})
    role_principal = identity.credentials.lookup(session["access_key_id"]).principal
    return World(identity, directory, user, role_principal)


def _allow(action: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}


def _st(effect: str, operator: str, key: str, value) -> dict:
    return {"Effect": effect, "Action": "ecr:*", "Resource": "*", "Condition": {operator: {key: value}}}


# (key, operator, a value the request matches, a value it does not, principal: "user" | "session", context)
PRESENT = [
    ("aws:ResourceTag/env", "StringEquals", "prod", "dev", "user", PUBLIC),
    ("ecr:ResourceTag/env", "StringEquals", "prod", "dev", "user", PUBLIC),
    ("aws:ResourceTag/ENV", "StringEquals", "prod", "dev", "user", PUBLIC),  # key names are case-insensitive
    ("aws:RequestTag/team", "StringEquals", "blue", "red", "user", TAGGED_CONTEXT),
    ("aws:TagKeys", "ForAnyValue:StringEquals", "team", "owner", "user", TAGGED_CONTEXT),
    ("aws:RequestedRegion", "StringEquals", "us-east-1", "eu-west-1", "user", PUBLIC),
    ("aws:CurrentTime", "DateGreaterThan", "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "user", PUBLIC),
    ("aws:EpochTime", "NumericGreaterThan", "946684800", "32503680000", "user", PUBLIC),
    ("aws:SecureTransport", "Bool", "true", "false", "user", PUBLIC),
    ("aws:PrincipalAccount", "StringEquals", ACCOUNT, "111122223333", "user", PUBLIC),
    ("aws:PrincipalArn", "ArnEquals", f"arn:aws:iam::{ACCOUNT}:user/alice", "arn:aws:iam::*:user/bob", "user", PUBLIC),
    (
        "aws:PrincipalArn",
        "ArnLike",
        f"arn:aws:iam::{ACCOUNT}:role/deployer",
        "arn:aws:iam::*:user/*",
        "session",
        PUBLIC,
    ),
    ("aws:PrincipalTag/team", "StringEquals", "blue", "ops", "user", PUBLIC),
    ("aws:PrincipalTag/Team", "StringEquals", "ops", "blue", "session", PUBLIC),  # the role's tags
    ("aws:PrincipalType", "StringEquals", "User", "AssumedRole", "user", PUBLIC),
    ("aws:PrincipalType", "StringEquals", "AssumedRole", "User", "session", PUBLIC),
    ("aws:userid", "StringLike", "AIDA*", "AROA*", "user", PUBLIC),
    ("aws:userid", "StringLike", "AROA*:s1", "AIDA*", "session", PUBLIC),
    ("aws:username", "StringEquals", "alice", "bob", "user", PUBLIC),
    ("aws:PrincipalIsAWSService", "Bool", "false", "true", "user", PUBLIC),
    ("aws:ViaAWSService", "Bool", "false", "true", "user", PUBLIC),
    ("aws:ResourceAccount", "StringEquals", ACCOUNT, "111122223333", "user", PUBLIC),
    ("aws:UserAgent", "StringLike", "soko-test/*", "curl/*", "user", PUBLIC),
    ("aws:SourceIp", "IpAddress", "192.0.2.0/24", "10.0.0.0/8", "user", PUBLIC),
    ("aws:SourceVpce", "StringEquals", "vpce-0abc1234", "vpce-0def5678", "user", VPCE),
    ("aws:VpcSourceIp", "IpAddress", "10.0.0.0/8", "192.0.2.0/24", "user", VPCE),
    ("aws:MultiFactorAuthPresent", "Bool", "false", "true", "session", PUBLIC),
    ("aws:TokenIssueTime", "DateGreaterThan", "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "session", PUBLIC),
]

# Keys the request does not carry: Soko never knows them, or AWS leaves them out for this request.
ABSENT = [
    ("aws:PrincipalOrgID", "user", PUBLIC),
    ("aws:SourceArn", "user", PUBLIC),
    ("aws:SourceAccount", "user", PUBLIC),
    ("aws:MultiFactorAuthAge", "session", PUBLIC),
    ("aws:MultiFactorAuthPresent", "user", PUBLIC),  # long-term keys: absent, not false
    ("aws:TokenIssueTime", "user", PUBLIC),
    ("aws:username", "session", PUBLIC),
    ("aws:ResourceTag/owner", "user", PUBLIC),
    ("aws:RequestTag/team", "user", PUBLIC),  # not a tagging request
    ("aws:TagKeys", "user", PUBLIC),
    ("aws:SourceVpce", "user", PUBLIC),
    ("aws:SourceVpc", "user", VPCE),  # Soko's endpoints have no VPC id
    ("aws:SourceIp", "user", VPCE),  # through an endpoint AWS reports aws:VpcSourceIp instead
    ("aws:PrincipalTag/owner", "user", PUBLIC),  # a tag the user does not have
    ("aws:PrincipalTag/owner", "session", PUBLIC),
]


def _name(key: str, who: str, context: RequestContext) -> str:
    return f"{key} ({who}, {'endpoint' if context is VPCE else 'public'})"


def test_populated_key_matrix(world, registry):
    """Each key the request carries: Allow/Deny that match and that do not, IfExists, Null."""
    wrong = []
    for key, op, match, other, who, context in PRESENT:
        principal = world.user if who == "user" else world.session
        qualifier, _, base = op.rpartition(":")
        if_exists = f"{qualifier}:{base}IfExists" if qualifier else f"{base}IfExists"
        expected = [
            ("Allow", op, match, True),
            ("Allow", op, other, False),
            ("Deny", op, match, False),  # the Deny matches: it must not fail open
            ("Deny", op, other, True),
            ("Deny", if_exists, match, False),  # present: IfExists compares as usual
            ("Allow", if_exists, other, False),
            ("Deny", "Null", "false", False),  # present: "not null" holds
            ("Deny", "Null", "true", True),
        ]
        for effect, operator, value, allowed in expected:
            got = world.decide(_st(effect, operator, key, value), principal=principal, context=context)
            if got is not allowed:
                wrong.append(f"{_name(key, who, context)}: {effect} {operator} {value!r} -> allowed={got}")
    assert wrong == []

    # Tag changes apply to the next decision (cached decisions and tags are per metadata generation).
    ref = RepoRef(ACCOUNT, REPO)
    assert world.decide(_st("Deny", "StringEquals", "aws:ResourceTag/env", "prod")) is False
    registry.repositories.untag(ref, ["env"])
    assert world.identity.authorizer.decide(world.user, "ecr:BatchGetImage", REPO_ARN, ACCOUNT, PUBLIC).allowed
    registry.repositories.tag(ref, [{"Key": "env", "Value": "prod"}])
    assert not world.identity.authorizer.decide(world.user, "ecr:BatchGetImage", REPO_ARN, ACCOUNT, PUBLIC).allowed


def test_absent_key_matrix(world, caplog):
    """AWS: a condition on a missing key is false; negated operators, ...IfExists and ForAllValues are true; Null
    "true" holds."""
    expected = [
        ("Allow", "StringEquals", "x", False),
        ("Deny", "StringEquals", "x", True),
        ("Deny", "StringLike", "*", True),  # not even a wildcard matches a missing key
        ("Deny", "StringNotEquals", "x", False),  # negated: true on a missing key
        ("Allow", "StringNotEquals", "x", True),
        ("Deny", "StringEqualsIfExists", "x", False),
        ("Allow", "StringEqualsIfExists", "x", True),
        ("Deny", "ForAnyValue:StringEquals", "x", True),
        ("Deny", "ForAllValues:StringEquals", "x", False),
        ("Deny", "Null", "true", False),
        ("Deny", "Null", "false", True),
    ]
    caplog.set_level(logging.WARNING, logger="soko.iam.policy")
    wrong = []
    for key, who, context in ABSENT:
        principal = world.user if who == "user" else world.session
        for effect, operator, value, allowed in expected:
            got = world.decide(_st(effect, operator, key, value), principal=principal, context=context)
            if got is not allowed:
                wrong.append(f"{_name(key, who, context)}: {effect} {operator} {value!r} -> allowed={got}")
    assert wrong == []

    # Storing a policy that tests a key Soko never populates logs a warning; keys it populates do not.
    warned = [r.getMessage() for r in caplog.records if r.name == "soko.iam.policy"]
    for key in ("aws:principalorgid", "aws:sourcearn", "aws:sourceaccount", "aws:multifactorauthage"):
        assert any(key in w and "inline policy p of" in w for w in warned), key
    assert not any("aws:resourcetag/owner" in w or "aws:username" in w for w in warned)
    caplog.clear()
    world.decide(_st("Allow", "StringEquals", "aws:PrincipalTag/team", "${aws:username}"))
    world.decide(_st("Allow", "StringEquals", "aws:username", "${aws:PrincipalOrgID}"))
    warned = [r.getMessage() for r in caplog.records if r.name == "soko.iam.policy"]
    assert len(warned) == 1 and "aws:PrincipalOrgID" in warned[0]
