"""Value types shared by the parser and the evaluator: kinds, the caller, the request and the decision."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from soko.errors import SokoError

ContextValue = str | list[str] | bool | int | None


class MalformedPolicy(SokoError):
    """A policy document is not valid IAM policy JSON for its kind; the message says what is wrong."""


def quote(value: object, limit: int = 64) -> str:
    """A document value for an error message: repr'd and cut short, since documents may be 10 KB of garbage."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PolicyKind(enum.Enum):
    IDENTITY = "identity"  # user/role inline and managed policies
    RESOURCE = "resource"  # ECR repository policy (implicit Resource: the repository)
    REGISTRY = "registry"  # ECR registry policy
    TRUST = "trust"  # IAM role trust (assume-role) policy
    KEY = "key"  # KMS key policy (the key's own, authoritative resource policy: soko.kms)

    @property
    def label(self) -> str:
        return f"{self.value} policy"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    arn: str  # user ARN, arn:aws:iam::<acct>:root, or arn:aws:sts::<acct>:assumed-role/<Role>/<session>
    account: str  # 12 digits
    type: str  # "Account" (root) | "User" | "AssumedRole" | "Service" (arn = service name, e.g. ecr.amazonaws.com)
    user_id: str  # aws:userid
    username: str | None = None  # aws:username (users only)
    role_arn: str | None = None  # assumed roles: arn:aws:iam::<acct>:role/<path><Role>
    tags: tuple[tuple[str, str], ...] = ()  # aws:PrincipalTag/<key>: the user's tags, or the assumed role's
    token_issued_at: float | None = None  # temporary credentials: when STS issued them (aws:TokenIssueTime)


@dataclass
class AuthzRequest:
    principal: Principal
    action: str  # "ecr:BatchGetImage"
    resource: str  # an ARN, or "*" for actions without a resource (ecr:GetAuthorizationToken)
    resource_account: str | None = None  # owner of the resource; None means the caller's own account
    context: Mapping[str, ContextValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    explicit_deny: bool = False
    # evaluate_trust only: the trust policy names the caller's account rather than the caller, so the caller's
    # identity policies must also allow the action (compose with evaluate()).
    delegated: bool = False
