"""evaluate()/evaluate_trust(): element matching and AWS's decision logic, same- and cross-account."""

from __future__ import annotations

import json

import pytest

from soko.iam.policy import (
    AuthzRequest,
    Decision,
    Policy,
    PolicyKind,
    Principal,
    evaluate,
    evaluate_trust,
    parse_policy,
)

OWNER, OTHER = "111122223333", "444455556666"
REGION = "us-east-1"


def repo_arn(name: str = "team/app", account: str = OWNER) -> str:
    return f"arn:aws:ecr:{REGION}:{account}:repository/{name}"


def root(account: str) -> Principal:
    return Principal(f"arn:aws:iam::{account}:root", account, "Account", account)


def user(account: str, name: str = "alice") -> Principal:
    return Principal(f"arn:aws:iam::{account}:user/{name}", account, "User", f"AIDA{name.upper()}", name)


def session(account: str, role: str = "Builder", name: str = "ci") -> Principal:
    return Principal(
        f"arn:aws:sts::{account}:assumed-role/{role}/{name}",
        account,
        "AssumedRole",
        f"AROA{role.upper()}:{name}",
        None,
        f"arn:aws:iam::{account}:role/{role}",
    )


def policy(kind: PolicyKind, *statements: dict) -> Policy:
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), kind)


def identity(*statements: dict) -> Policy:
    return policy(PolicyKind.IDENTITY, *statements)


def repository(*statements: dict) -> Policy:
    return policy(PolicyKind.RESOURCE, *statements)


def check(
    principal: Principal,
    action: str = "ecr:BatchGetImage",
    resource: str | None = None,
    *,
    ids: tuple[Policy, ...] = (),
    res: tuple[Policy, ...] = (),
    context: dict | None = None,
    resource_account: str | None = OWNER,
) -> Decision:
    request = AuthzRequest(principal, action, resource or repo_arn(), resource_account, context or {})
    return evaluate(request, identity_policies=ids, resource_policies=res)


ALICE = user(OWNER)

# --- Action / Resource matching ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("ecr:BatchGetImage", "ecr:BatchGetImage", True),
        ("ECR:batchgetimage", "ecr:BatchGetImage", True),  # actions are case-insensitive
        ("ecr:batchgetimage", "ECR:BATCHGETIMAGE", True),
        ("ecr:*", "ecr:PutImage", True),
        ("*", "sts:AssumeRole", True),
        ("ecr:Get*", "ecr:GetDownloadUrlForLayer", True),
        ("ecr:Get*", "ecr:BatchGetImage", False),
        ("ecr:*Layer*", "ecr:InitiateLayerUpload", True),
        ("ecr:?utImage", "ecr:PutImage", True),
        ("ecr:?utImage", "ecr:PPutImage", False),
        ("ecr:PutImage", "ecr:PutImageTagMutability", False),  # whole-string match
        ("ecr*:PutImage", "ecr-public:PutImage", True),
        ("ecr:Put.mage", "ecr:PutImage", False),  # regex metacharacters are literal
    ],
)
def test_action_matching(pattern: str, action: str, expected: bool) -> None:
    ids = (identity({"Effect": "Allow", "Action": pattern, "Resource": "*"}),)
    assert check(ALICE, action, ids=ids).allowed is expected


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("*", repo_arn(), True),
        ("*", "*", True),
        (repo_arn(), repo_arn(), True),
        (repo_arn("team/*"), repo_arn("team/app"), True),
        (repo_arn("team/*"), repo_arn("team/a/b"), True),
        (repo_arn("team/*"), repo_arn("teams/app"), False),
        (repo_arn("team/ap?"), repo_arn("team/app"), True),
        ("arn:aws:ecr:*:*:repository/*", repo_arn(), True),
        ("arn:aws:ecr:us-west-2:*:repository/*", repo_arn(), False),
        ("arn:aws:ecr:*:444455556666:repository/*", repo_arn(), False),
        (repo_arn("Team/App"), repo_arn("team/app"), False),  # ARNs are case-sensitive
        (repo_arn("team/*"), "*", False),  # a pattern never matches the "no resource" request
    ],
)
def test_resource_matching(pattern: str, resource: str, expected: bool) -> None:
    ids = (identity({"Effect": "Allow", "Action": "ecr:*", "Resource": pattern}),)
    assert check(ALICE, resource=resource, ids=ids).allowed is expected


def test_not_action_and_not_resource() -> None:
    ids = (identity({"Effect": "Allow", "NotAction": ["ecr:Delete*", "ecr:PutImage"], "Resource": "*"}),)
    assert check(ALICE, "ecr:BatchGetImage", ids=ids).allowed
    assert not check(ALICE, "ecr:DeleteRepository", ids=ids).allowed
    assert not check(ALICE, "ECR:putimage", ids=ids).allowed
    ids = (identity({"Effect": "Allow", "Action": "ecr:*", "NotResource": repo_arn("prod/*")}),)
    assert check(ALICE, resource=repo_arn("dev/app"), ids=ids).allowed
    assert not check(ALICE, resource=repo_arn("prod/app"), ids=ids).allowed
    # NotAction with Deny: deny everything except the listed actions.
    ids = (
        identity(
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "NotAction": "ecr:BatchGetImage", "Resource": "*"},
        ),
    )
    assert check(ALICE, "ecr:BatchGetImage", ids=ids).allowed
    d = check(ALICE, "ecr:PutImage", ids=ids)
    assert not d.allowed and d.explicit_deny


def test_resource_policy_variables() -> None:
    ids = (identity({"Effect": "Allow", "Action": "ecr:*", "Resource": repo_arn("home/${aws:username}/*")}),)
    assert check(ALICE, resource=repo_arn("home/alice/app"), ids=ids).allowed
    assert not check(ALICE, resource=repo_arn("home/bob/app"), ids=ids).allowed
    assert not check(session(OWNER), resource=repo_arn("home/alice/app"), ids=ids).allowed  # no aws:username
    tricky = user(OWNER, "a*")  # the substituted name is literal, not a wildcard
    assert not check(tricky, resource=repo_arn("home/abc/app"), ids=ids).allowed
    assert check(tricky, resource=repo_arn("home/a*/app"), ids=ids).allowed


# --- Principal matching in resource policies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal_element", "caller", "expected"),
    [
        ("*", user(OWNER), True),
        ({"AWS": "*"}, session(OTHER), True),
        ({"AWS": f"arn:aws:iam::{OWNER}:user/alice"}, user(OWNER), True),
        ({"AWS": f"arn:aws:iam::{OWNER}:user/alice"}, user(OWNER, "bob"), False),
        ({"AWS": f"arn:aws:iam::{OWNER}:role/Builder"}, session(OWNER), True),  # role covers its sessions
        ({"AWS": f"arn:aws:iam::{OWNER}:role/Builder"}, session(OWNER, "Other"), False),
        ({"AWS": f"arn:aws:sts::{OWNER}:assumed-role/Builder/ci"}, session(OWNER), True),
        ({"AWS": f"arn:aws:sts::{OWNER}:assumed-role/Builder/ci"}, session(OWNER, name="other"), False),
        ({"AWS": [f"arn:aws:iam::{OTHER}:user/x", f"arn:aws:iam::{OWNER}:user/alice"]}, user(OWNER), True),
        ({"AWS": OWNER}, root(OWNER), True),
        ({"AWS": f"arn:aws:iam::{OWNER}:root"}, root(OWNER), True),
        ({"Service": "ecr.amazonaws.com"}, user(OWNER), False),
    ],
)
def test_resource_policy_principals_same_account(principal_element: object, caller: Principal, expected: bool) -> None:
    res = (repository({"Effect": "Allow", "Principal": principal_element, "Action": "ecr:BatchGetImage"}),)
    assert check(caller, res=res, resource_account=caller.account).allowed is expected


def test_account_principal_delegates_to_identity_policies() -> None:
    # Naming the account (not the caller) grants to the account, whose identity policies decide (AWS semantics).
    res = (repository({"Effect": "Allow", "Principal": {"AWS": OWNER}, "Action": "ecr:*"}),)
    d = check(ALICE, res=res)
    assert not d.allowed and "delegates" in d.reason
    ids = (identity({"Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": "*"}),)
    assert check(ALICE, ids=ids, res=res).allowed
    # The same element denies everyone in the account.
    res = (repository({"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{OWNER}:root"}, "Action": "ecr:*"}),)
    d = check(ALICE, ids=ids, res=res)
    assert not d.allowed and d.explicit_deny


def test_not_principal_deny() -> None:
    keep = {"AWS": [f"arn:aws:iam::{OWNER}:role/Builder", f"arn:aws:iam::{OWNER}:root"]}
    res = (
        repository(
            {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
            {"Effect": "Deny", "NotPrincipal": keep, "Action": "ecr:PutImage"},
        ),
    )
    assert check(session(OWNER), "ecr:PutImage", res=res).allowed
    assert check(root(OWNER), "ecr:PutImage", res=res).allowed
    d = check(ALICE, "ecr:PutImage", res=res)
    assert not d.allowed and d.explicit_deny
    assert check(ALICE, "ecr:BatchGetImage", res=res).allowed
    # Listing only the role but not its account does not exempt its sessions (AWS checks the account first).
    res = (
        repository({"Effect": "Deny", "NotPrincipal": {"AWS": f"arn:aws:iam::{OWNER}:role/Builder"}, "Action": "*"}),
    )
    ids = (identity({"Effect": "Allow", "Action": "*", "Resource": "*"}),)
    assert check(session(OWNER), ids=ids, res=res).explicit_deny
    # Another account's callers are not exempt.
    res = (repository({"Effect": "Deny", "NotPrincipal": {"AWS": OWNER}, "Action": "*"}),)
    assert check(root(OWNER), res=res).allowed
    assert check(session(OTHER), ids=ids, res=res).explicit_deny


# --- The decision matrix -------------------------------------------------------------------------------------------
# Identity policy allows / denies / says nothing (columns, grouped) x resource policy allows / denies / says nothing
# (within each group). A = allowed, X = explicit deny, - = implicit deny. Source: AWS policy evaluation logic,
# same-account and cross-account; the root user ignores identity policies and may do anything in its own account
# unless a resource policy denies it; a foreign root counts as having an identity Allow.
#                      identity: allow  deny  none
#                      resource: A X -  A X -  A X -
MATRIX = """
root          same             A X A  A X A  A X A
user          same             A X A  X X X  A X -
assumed-role  same             A X A  X X X  A X -
root          cross            A X -  A X -  A X -
user          cross            A X -  X X X  - X -
assumed-role  cross            A X -  X X X  - X -
"""


def _matrix() -> list[tuple[str, str, str, str, str]]:
    rows = []
    for line in MATRIX.strip().splitlines():
        caller, where, *cells = line.split()
        for i, cell in enumerate(cells):
            rows.append((caller, where, ("allow", "deny", "none")[i // 3], ("allow", "deny", "none")[i % 3], cell))
    return rows


@pytest.mark.parametrize(("caller", "where", "ident", "resource", "expected"), _matrix())
def test_decision_matrix(caller: str, where: str, ident: str, resource: str, expected: str) -> None:
    account = OWNER if where == "same" else OTHER
    principal = {"root": root, "user": user, "assumed-role": session}[caller](account)
    # The resource policy names the caller itself: the root ARN, the user ARN, the role ARN.
    named = principal.role_arn or principal.arn
    ids = () if ident == "none" else (identity({"Effect": ident.title(), "Action": "ecr:*", "Resource": "*"}),)
    res: tuple[Policy, ...] = ()
    if resource != "none":
        res = (repository({"Effect": resource.title(), "Principal": {"AWS": named}, "Action": "ecr:BatchGetImage"}),)
    d = check(principal, ids=ids, res=res)
    assert (d.allowed, d.explicit_deny) == {"A": (True, False), "X": (False, True), "-": (False, False)}[expected], d
    assert d.reason


def test_cross_account_with_account_principal_needs_identity_allow() -> None:
    res = (repository({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "ecr:*"}),)
    d = check(user(OTHER), res=res)
    assert not d.allowed and "cross-account" in d.reason and "identity" in d.reason
    ids = (identity({"Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": repo_arn()}),)
    d = check(user(OTHER), ids=ids, res=res)
    assert d.allowed and "cross-account" in d.reason
    assert check(root(OTHER), res=res).allowed
    # Identity allow alone never reaches into another account.
    d = check(user(OTHER), ids=ids)
    assert not d.allowed and "resource-based policy" in d.reason
    # An identity policy scoped to the caller's own resources does not help.
    ids = (identity({"Effect": "Allow", "Action": "ecr:*", "Resource": f"arn:aws:ecr:*:{OTHER}:repository/*"}),)
    assert not check(user(OTHER), ids=ids, res=res).allowed


def test_statement_resource_in_repository_policy() -> None:
    res = (repository({"Effect": "Allow", "Principal": "*", "Action": "ecr:*", "Resource": repo_arn("team/*")}),)
    assert check(ALICE, resource=repo_arn("team/app"), res=res).allowed
    assert not check(ALICE, resource=repo_arn("other/app"), res=res).allowed


def test_resource_star_actions_and_root() -> None:
    # ecr:GetAuthorizationToken has no resource: it comes from identity policies, in the caller's own account.
    ids = (identity({"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}),)
    assert check(ALICE, "ecr:GetAuthorizationToken", "*", ids=ids, resource_account=None).allowed
    assert not check(ALICE, "ecr:GetAuthorizationToken", "*", resource_account=None).allowed
    assert check(root(OWNER), "ecr:GetAuthorizationToken", "*", resource_account=None).allowed


def test_first_deny_wins_regardless_of_order() -> None:
    ids = (
        identity({"Effect": "Allow", "Action": "*", "Resource": "*"}),
        identity({"Sid": "NoPush", "Effect": "Deny", "Action": "ecr:PutImage", "Resource": "*"}),
    )
    d = check(ALICE, "ecr:PutImage", ids=ids)
    assert d == Decision(False, "explicit deny in identity policy (Sid NoPush)", True)


def test_conditioned_deny_only_when_condition_holds() -> None:
    res = (
        repository(
            {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
            {
                "Sid": "OnlyFromVpce",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "ecr:*",
                "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1"}},
            },
        ),
    )
    assert check(ALICE, res=res, context={"aws:SourceVpce": "vpce-1"}).allowed
    d = check(ALICE, res=res, context={"aws:SourceVpce": "vpce-2"})
    assert d.explicit_deny and "OnlyFromVpce" in d.reason
    assert check(ALICE, res=res).explicit_deny  # key missing: the negated condition holds


# --- Registry policy + repository policy ---------------------------------------------------------------------------


def registry(*statements: dict) -> Policy:
    return policy(PolicyKind.REGISTRY, *statements)


def test_registry_policy_grants_replication_to_source_account() -> None:
    reg = registry(
        {
            "Sid": "ReplicationAccess",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
            "Resource": f"arn:aws:ecr:{REGION}:{OWNER}:repository/*",
        }
    )
    d = check(root(OTHER), "ecr:ReplicateImage", res=(reg,))
    assert d.allowed and "registry policy" in d.reason
    assert not check(root(OTHER), "ecr:PutImage", res=(reg,)).allowed
    assert not check(
        root(OTHER), "ecr:ReplicateImage", f"arn:aws:ecr:us-west-2:{OWNER}:repository/x", res=(reg,)
    ).allowed


def test_registry_and_repository_policies_combine() -> None:
    reg = registry(
        {"Sid": "NoDeletes", "Effect": "Deny", "Principal": "*", "Action": "ecr:BatchDeleteImage", "Resource": "*"},
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": "ecr:BatchGetImage",
            "Resource": f"arn:aws:ecr:{REGION}:{OWNER}:repository/shared/*",
        },
    )
    repo = repository({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "ecr:*"})
    ids = (identity({"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}),)
    other = user(OTHER)
    # The repository policy grants what the registry policy does not; the registry Deny wins over both.
    assert check(other, "ecr:PutImage", ids=ids, res=(repo, reg)).allowed
    assert check(other, "ecr:BatchGetImage", repo_arn("shared/x"), ids=ids, res=(reg,)).allowed
    assert not check(other, "ecr:BatchGetImage", repo_arn("private/x"), ids=ids, res=(reg,)).allowed
    d = check(other, "ecr:BatchDeleteImage", ids=ids, res=(repo, reg))
    assert d.explicit_deny and d.reason == "explicit deny in registry policy (Sid NoDeletes)"
    d = check(root(OWNER), "ecr:BatchDeleteImage", res=(repo, reg))
    assert d.explicit_deny  # even the owner's root


def test_service_principal() -> None:
    svc = Principal("ecr.amazonaws.com", OWNER, "Service", "ecr.amazonaws.com")
    res = (repository({"Effect": "Allow", "Principal": {"Service": "ecr.amazonaws.com"}, "Action": "ecr:*"}),)
    assert check(svc, res=res).allowed
    assert not check(svc).allowed
    assert not check(Principal("other.amazonaws.com", OWNER, "Service", "x"), res=res).allowed


# --- Trust policies ------------------------------------------------------------------------------------------------

ROLE = f"arn:aws:iam::{OWNER}:role/Deployer"


def trust(*statements: dict) -> Policy:
    return policy(PolicyKind.TRUST, *statements)


def test_trust_names_the_caller() -> None:
    t = trust({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OWNER}:user/alice"}, "Action": "sts:AssumeRole"})
    d = evaluate_trust(t, ALICE)
    assert d.allowed and not d.delegated
    assert not evaluate_trust(t, user(OWNER, "bob")).allowed
    assert not evaluate_trust(t, ALICE, "sts:TagSession").allowed


def test_trust_names_an_account_delegates() -> None:
    t = trust({"Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": ["sts:AssumeRole", "sts:TagSession"]})
    d = evaluate_trust(t, session(OTHER))
    assert d.allowed and d.delegated
    assert evaluate_trust(t, user(OTHER), "sts:TagSession").allowed
    assert not evaluate_trust(t, ALICE).allowed
    d = evaluate_trust(t, root(OTHER))
    assert d.allowed and not d.delegated


def test_trust_conditions_deny_and_services() -> None:
    t = trust(
        {
            "Effect": "Allow",
            "Principal": {"AWS": OTHER},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": "s3cr3t"}},
        },
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
        {"Sid": "NoBob", "Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:user/bob"}, "Action": "sts:*"},
    )
    assert evaluate_trust(t, user(OTHER), context={"sts:ExternalId": "s3cr3t"}).allowed
    assert not evaluate_trust(t, user(OTHER), context={"sts:ExternalId": "nope"}).allowed
    assert not evaluate_trust(t, user(OTHER)).allowed
    d = evaluate_trust(t, user(OTHER, "bob"), context={"sts:ExternalId": "s3cr3t"})
    assert d.explicit_deny and "NoBob" in d.reason
    assert evaluate_trust(t, Principal("ec2.amazonaws.com", OWNER, "Service", "ec2.amazonaws.com")).allowed


def test_trust_composed_with_identity_via_evaluate() -> None:
    # Cross-account AssumeRole: the trust policy (resource side) and the caller's identity policy must both allow.
    t = trust({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "sts:AssumeRole"})
    ids = (identity({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE}),)
    caller = session(OTHER, "Ci")
    assert evaluate_trust(t, caller).allowed
    assert not check(caller, "sts:AssumeRole", ROLE, res=(t,)).allowed
    assert check(caller, "sts:AssumeRole", ROLE, ids=ids, res=(t,)).allowed
    # Same account, trust naming the user directly: no identity policy needed.
    t = trust({"Effect": "Allow", "Principal": {"AWS": ALICE.arn}, "Action": "sts:AssumeRole"})
    assert check(ALICE, "sts:AssumeRole", ROLE, res=(t,)).allowed


def test_policies_passed_on_the_wrong_side_grant_nothing() -> None:
    ids = identity({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert not check(ALICE, res=(ids,)).allowed
    res = repository({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:user/x"}, "Action": "*"})
    assert not check(ALICE, ids=(res,)).allowed


def test_evaluation_is_fast_enough() -> None:

    ids = (
        identity(
            {
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": repo_arn("team/*"),
            },
            {
                "Effect": "Deny",
                "Action": "ecr:Delete*",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ),
    )
    res = (
        repository(
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "ecr:BatchGetImage"},
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "ecr:PutImage",
                "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            },
        ),
    )
    req = AuthzRequest(ALICE, "ecr:BatchGetImage", repo_arn(), OWNER, {"aws:SourceIp": "10.1.2.3"})
    # Speed is measured in bench/, never asserted here; this checks a realistic policy set evaluates correctly.
    assert evaluate(req, identity_policies=ids, resource_policies=res).allowed
