"""AWS's policy evaluation logic for one request (identity + resource-based policies, cross-account variant).

https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
An explicit Deny anywhere wins. The root of the resource's account may do anything there unless a resource policy
denies it. Within one account an Allow from an identity policy or a resource policy suffices; across accounts both
the resource policy and the caller's identity policies must allow. A resource policy that names only the caller's
account (not the caller) delegates to that account's identity policies rather than granting by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from soko.iam.policy.context import RequestContext
from soko.iam.policy.document import Policy, Statement
from soko.iam.policy.matching import ACCOUNT_MATCH, DIRECT_MATCH, NO_MATCH
from soko.iam.policy.model import AuthzRequest, ContextValue, Decision, PolicyKind, Principal


def evaluate(
    request: AuthzRequest,
    *,
    identity_policies: Sequence[Policy] = (),
    resource_policies: Sequence[Policy] = (),
) -> Decision:
    p = request.principal
    action = request.action.lower()
    resource = request.resource
    ctx = RequestContext(p, request.context)
    resource_account = request.resource_account or p.account

    # Resource side (repository policy, registry policy, trust policy): note the strongest Allow, stop at a Deny.
    resource_side = _resource_grant(resource_policies, p, action, resource, ctx)
    if isinstance(resource_side, Decision):
        return resource_side
    granted, granted_by = resource_side

    if p.type == "Account" and p.account == resource_account:
        return Decision(True, "allowed: the account root user in its own account")

    identity_allow = _identity_allow(identity_policies, p, action, resource, ctx)
    if isinstance(identity_allow, Decision):
        return identity_allow

    if p.type == "Service":
        if granted == DIRECT_MATCH and granted_by is not None:
            return Decision(True, _because("allowed by", *granted_by))
        return Decision(False, "no resource-based policy allows the action for this service")

    if p.account == resource_account:
        if identity_allow is not None:
            return Decision(True, _because("allowed by", *identity_allow))
        if granted == DIRECT_MATCH and granted_by is not None:
            return Decision(True, _because("allowed by", *granted_by))
        if granted == ACCOUNT_MATCH:
            return Decision(
                False,
                "no identity-based policy allows the action (the resource-based policy grants the account, "
                "which delegates to identity policies)",
            )
        if not resource_policies:
            return Decision(False, "no identity-based policy allows the action")
        return Decision(False, "no identity-based or resource-based policy allows the action")

    # Cross-account: the resource owner and the caller's account must both agree.
    if granted_by is None:
        return Decision(
            False,
            f"cross-account: no resource-based policy in account {resource_account} "
            f"allows the action for this principal",
        )
    if identity_allow is None and p.type != "Account":  # a foreign root holds every identity permission
        return Decision(False, "cross-account: no identity-based policy allows the action")
    return Decision(True, "allowed cross-account: " + _because("allowed by", *granted_by))


def evaluate_key_policy(
    request: AuthzRequest,
    *,
    key_policy: Policy | None,
    identity_policies: Sequence[Policy] = (),
) -> Decision:
    """KMS's rules: the key policy is the authority. Unlike other resources, the account root has no implicit
    access: IAM policies of the key's account apply only when the key policy grants the account (its root
    principal, as the default key policy does), a principal the key policy names directly is allowed by it, and
    across accounts both the key policy and the caller's identity policies must allow. An explicit Deny anywhere
    wins. https://docs.aws.amazon.com/kms/latest/developerguide/determining-access.html
    """
    p = request.principal
    action = request.action.lower()
    resource = request.resource
    ctx = RequestContext(p, request.context)
    resource_account = request.resource_account or p.account

    key_side = _resource_grant([key_policy] if key_policy is not None else [], p, action, resource, ctx)
    if isinstance(key_side, Decision):
        return key_side
    granted, granted_by = key_side
    identity_allow = _identity_allow(identity_policies, p, action, resource, ctx)
    if isinstance(identity_allow, Decision):
        return identity_allow

    if granted_by is None:
        return Decision(False, "no key policy statement allows the action for this principal")
    if p.account == resource_account:
        if granted == DIRECT_MATCH:
            return Decision(True, _because("allowed by", *granted_by))
        if identity_allow is not None:  # the key policy grants the account: its IAM policies decide
            return Decision(True, _because("allowed by", *identity_allow))
        return Decision(
            False,
            "no identity-based policy allows the action (the key policy grants the account, which delegates to "
            "IAM policies)",
        )
    if identity_allow is None and p.type != "Account":
        return Decision(False, "cross-account: no identity-based policy allows the action")
    return Decision(True, "allowed cross-account: " + _because("allowed by", *granted_by))


def evaluate_trust(
    policy: Policy,
    principal: Principal,
    action: str = "sts:AssumeRole",
    context: Mapping[str, ContextValue] | None = None,
) -> Decision:
    """Does a role's trust policy let `principal` perform `action` (sts:AssumeRole, sts:TagSession...)?

    Only the trust policy is consulted. When the grant names just the caller's account, or the caller is in
    another account, the caller's identity policies must allow the action as well (Decision.delegated marks the
    first case); compose that with evaluate().
    """
    ctx = RequestContext(principal, context or {})
    action = action.lower()
    granted = NO_MATCH
    granted_by: Statement | None = None
    for st in policy.statements:
        level = _principal_level(st, principal)
        if level == NO_MATCH or (st.allow and level <= granted):
            continue
        if not st.applies(action, "*", ctx):
            continue
        if not st.allow:
            return Decision(False, _because("explicit deny in", policy, st), True)
        granted, granted_by = level, st
    if granted_by is None:
        return Decision(False, "the trust policy does not allow this principal to assume the role")
    return Decision(True, _because("allowed by", policy, granted_by), delegated=granted == ACCOUNT_MATCH)


def _resource_grant(
    policies: Sequence[Policy], p: Principal, action: str, resource: str, ctx: RequestContext
) -> tuple[int, tuple[Policy, Statement] | None] | Decision:
    """The strongest grant resource-based policies give the caller (level, by what), or the Decision of an explicit
    Deny among them."""
    granted = NO_MATCH
    granted_by: tuple[Policy, Statement] | None = None
    for policy in policies:
        for st in policy.statements:
            level = _principal_level(st, p)
            if level == NO_MATCH or (st.allow and level <= granted):
                continue
            if not st.applies(action, resource, ctx):
                continue
            if not st.allow:
                return Decision(False, _because("explicit deny in", policy, st), True)
            granted, granted_by = level, (policy, st)
    return granted, granted_by


def _identity_allow(
    policies: Sequence[Policy], p: Principal, action: str, resource: str, ctx: RequestContext
) -> tuple[Policy, Statement] | Decision | None:
    """The first identity-policy Allow for the request, the Decision of an explicit Deny, or None."""
    allow: tuple[Policy, Statement] | None = None
    if p.type in ("Account", "Service"):  # root and services have no identity policies
        return None
    for policy in policies:
        if policy.kind is not PolicyKind.IDENTITY:  # a Principal-bearing policy here would grant to anyone
            continue
        for st in policy.statements:
            if (st.allow and allow is not None) or not st.applies(action, resource, ctx):
                continue
            if not st.allow:
                return Decision(False, _because("explicit deny in", policy, st), True)
            allow = (policy, st)
    return allow


def _principal_level(st: Statement, p: Principal) -> int:
    if st.principals is None:  # an identity policy passed as a resource policy: it names nobody
        return NO_MATCH
    if st.not_principal:
        return NO_MATCH if st.principals.exempts(p) else DIRECT_MATCH
    return st.principals.level(p)


def _because(prefix: str, policy: Policy, st: Statement) -> str:
    where = f"{prefix} {policy.kind.label}"
    if policy.id:
        where += f" {policy.id}"
    return f"{where} (Sid {st.sid})" if st.sid else f"{where} (statement {st.index})"
