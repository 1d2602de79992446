"""IAM policy JSON: grammar, validation and compilation into Policy/Statement objects."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from soko.iam.policy.conditions import Clause, parse_condition
from soko.iam.policy.context import RequestContext
from soko.iam.policy.matching import PrincipalSet, WildcardSet, compiled, valid_aws_principal
from soko.iam.policy.model import MalformedPolicy, PolicyKind, quote
from soko.iam.policy.variables import Template, parse_template

VERSIONS = ("2012-10-17", "2008-10-17")
_TOP_KEYS = {"Version", "Id", "Statement"}
_STATEMENT_KEYS = {
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
}
_PRINCIPAL_TYPES = {"AWS", "Service", "Federated", "CanonicalUser"}
_ACTION = re.compile(r"\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?_.-]+")
_IAM_SID = re.compile(r"[A-Za-z0-9]*")


class ResourceSet:
    """The Resource/NotResource patterns: static globs compiled once, patterns with variables per request."""

    __slots__ = ("static", "templates")

    def __init__(self, patterns: Iterable[str], variables: bool) -> None:
        static: list[str] = []
        templates: list[Template] = []
        for p in patterns:
            tpl = parse_template(p) if variables else None
            if tpl is None:
                static.append(p)
            else:
                templates.append(tpl)
        self.static = WildcardSet(static)
        self.templates = tuple(templates)

    def matches(self, resource: str, ctx: RequestContext) -> bool:
        if self.static.matches(resource):
            return True
        for tpl in self.templates:
            src = tpl.resolve_glob(ctx)
            if src is not None and compiled(src).fullmatch(resource):
                return True
        return False


@dataclass(frozen=True, slots=True, eq=False)
class Statement:
    index: int  # 1-based position, for messages
    sid: str | None
    allow: bool
    principals: PrincipalSet | None  # None: identity policy (the principal is whoever holds the policy)
    not_principal: bool
    actions: tuple[str, ...]  # as written
    action_set: WildcardSet
    not_action: bool
    resources: ResourceSet | None  # None: implicit, the resource the policy is attached to
    not_resource: bool
    conditions: tuple[Clause, ...]

    @property
    def effect(self) -> str:
        return "Allow" if self.allow else "Deny"

    def applies(self, action_lower: str, resource: str, ctx: RequestContext) -> bool:
        """Action, resource and conditions match (the principal is checked by the caller)."""
        if self.action_set.matches(action_lower) == self.not_action:
            return False
        if self.resources is not None and self.resources.matches(resource, ctx) == self.not_resource:
            return False
        return all(c.test(ctx) for c in self.conditions)


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    kind: PolicyKind
    version: str  # "2012-10-17" or "2008-10-17" (also when Version is absent)
    id: str | None
    statements: tuple[Statement, ...]

    def actions_mentioned(self) -> frozenset[str]:
        """Every string in any Action or NotAction element, as written (for scope checks such as ECR's
        registry-policy V1, which accepts only a few actions)."""
        return frozenset(a for s in self.statements for a in s.actions)


def parse_policy(text: str | bytes, kind: PolicyKind) -> Policy:
    """Parse and validate a policy document; raises MalformedPolicy (only) on any bad input."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPolicy("Policy document is not valid UTF-8") from None
    if not isinstance(text, str):
        raise MalformedPolicy("Policy document must be a JSON string")
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except MalformedPolicy:
        raise
    except RecursionError:
        raise MalformedPolicy("Policy document is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int() refusing absurdly long numbers
        raise MalformedPolicy(f"Policy document is not valid JSON: {e}") from None
    return parse_policy_document(doc, kind)


def parse_policy_document(doc: object, kind: PolicyKind) -> Policy:
    """Validate an already decoded JSON document."""
    if not isinstance(doc, dict):
        raise MalformedPolicy("Policy document must be a JSON object")
    unknown = [k for k in doc if k not in _TOP_KEYS]
    if unknown:
        raise MalformedPolicy(f"Policy document has unknown element {quote(unknown[0])}")
    version = doc.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise MalformedPolicy("Version must be 2012-10-17 or 2008-10-17")
    pid = doc.get("Id")
    if pid is not None and not isinstance(pid, str):
        raise MalformedPolicy("Id must be a string")
    if "Statement" not in doc:
        raise MalformedPolicy("Policy document must contain Statement")
    raw = doc["Statement"]
    raw_list = raw if isinstance(raw, list) else [raw]
    if not raw_list:
        raise MalformedPolicy("Statement must not be empty")
    statements = tuple(_statement(s, i, kind, version == "2012-10-17") for i, s in enumerate(raw_list, 1))
    if kind in (PolicyKind.IDENTITY, PolicyKind.TRUST):  # IAM wants unique Sids; ECR policies do not
        sids = [s.sid for s in statements if s.sid]
        if len(sids) != len(set(sids)):
            raise MalformedPolicy("Statement IDs (Sid) must be unique")
    return Policy(kind, version, pid, statements)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise MalformedPolicy(f"Policy document has duplicate key {quote(k)}")
        out[k] = v
    return out


def _reject_constant(name: str) -> object:
    raise MalformedPolicy(f"Policy document is not valid JSON: {name} is not a number")


def _statement(raw: object, index: int, kind: PolicyKind, variables: bool) -> Statement:
    where = f"Statement {index}"
    if not isinstance(raw, dict):
        raise MalformedPolicy(f"{where}: must be an object")
    unknown = [k for k in raw if k not in _STATEMENT_KEYS]
    if unknown:
        raise MalformedPolicy(f"{where}: unknown element {quote(unknown[0])}")

    sid = raw.get("Sid")
    if sid is not None:
        if not isinstance(sid, str):
            raise MalformedPolicy(f"{where}: Sid must be a string")
        if kind in (PolicyKind.IDENTITY, PolicyKind.TRUST) and not _IAM_SID.fullmatch(sid):
            raise MalformedPolicy(f"{where}: Sid must be alphanumeric")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicy(f"{where}: Effect must be Allow or Deny")

    principals, not_principal = _principal(raw, where, kind, effect)
    actions, not_action = _pick(raw, "Action", "NotAction", where, required=True)
    for a in actions:
        if not _ACTION.fullmatch(a):
            raise MalformedPolicy(f"{where}: invalid action {quote(a)} (expected service:Action or *)")

    resource_required = kind is PolicyKind.IDENTITY
    if kind is PolicyKind.TRUST and ("Resource" in raw or "NotResource" in raw):
        raise MalformedPolicy(f"{where}: a trust policy cannot have Resource or NotResource")
    patterns, not_resource = _pick(raw, "Resource", "NotResource", where, required=resource_required)
    for r in patterns:
        if r != "*" and not (r.startswith("arn:") and r.count(":") >= 5):
            raise MalformedPolicy(f"{where}: resource {quote(r)} must be an ARN or *")

    conditions = parse_condition(raw["Condition"], where, variables) if "Condition" in raw else ()
    return Statement(
        index=index,
        sid=sid,
        allow=effect == "Allow",
        principals=principals,
        not_principal=not_principal,
        actions=tuple(actions),
        action_set=WildcardSet(actions, fold_case=True),
        not_action=not_action,
        resources=ResourceSet(patterns, variables) if patterns else None,
        not_resource=not_resource,
        conditions=conditions,
    )


def _pick(raw: dict, name: str, not_name: str, where: str, *, required: bool) -> tuple[list[str], bool]:
    """The strings of Name or NotName (exactly one may be present) and whether it was the Not form."""
    if name in raw and not_name in raw:
        raise MalformedPolicy(f"{where}: use either {name} or {not_name}, not both")
    if name not in raw and not_name not in raw:
        if required:
            raise MalformedPolicy(f"{where}: {name} or {not_name} is required")
        return [], False
    key = name if name in raw else not_name
    return _strings(raw[key], f"{where}: {key}"), key == not_name


def _strings(value: object, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise MalformedPolicy(f"{where} must not be empty")
    if not all(isinstance(v, str) and v for v in items):
        raise MalformedPolicy(f"{where} must be a non-empty string or a list of them")
    return cast("list[str]", items)


def _principal(raw: dict, where: str, kind: PolicyKind, effect: str) -> tuple[PrincipalSet | None, bool]:
    present = [k for k in ("Principal", "NotPrincipal") if k in raw]
    if kind is PolicyKind.IDENTITY:
        if present:
            raise MalformedPolicy(f"{where}: an identity policy cannot have {present[0]}")
        return None, False
    if not present:
        raise MalformedPolicy(f"{where}: Principal is required")
    if len(present) == 2:
        raise MalformedPolicy(f"{where}: use either Principal or NotPrincipal, not both")
    key = present[0]
    if key == "NotPrincipal":
        # AWS: NotPrincipal only with Deny, and never in role trust policies.
        if kind is PolicyKind.TRUST:
            raise MalformedPolicy(f"{where}: a trust policy cannot have NotPrincipal")
        if effect != "Deny":
            raise MalformedPolicy(f"{where}: NotPrincipal can only be used with Effect Deny")
    value = raw[key]
    if value == "*":
        return PrincipalSet(["*"], []), key == "NotPrincipal"
    if not isinstance(value, dict) or not value:
        raise MalformedPolicy(f'{where}: {key} must be "*" or an object such as {{"AWS": ...}}')
    aws: list[str] = []
    services: list[str] = []
    for ptype, ids in value.items():
        if ptype not in _PRINCIPAL_TYPES:
            raise MalformedPolicy(f"{where}: unknown principal type {quote(ptype)}")
        names = _strings(ids, f"{where}: {key} {ptype}")
        if ptype == "AWS":
            bad = [n for n in names if not valid_aws_principal(n)]
            if bad:
                raise MalformedPolicy(f"{where}: invalid principal {quote(bad[0])}")
            aws.extend(names)
        elif ptype == "Service":
            services.extend(names)
        # Federated and CanonicalUser are accepted but never match: Soko has no such callers.
    return PrincipalSet(aws, services), key == "NotPrincipal"
