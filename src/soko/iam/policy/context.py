"""The request context as conditions and policy variables see it: case-insensitive keys, principal keys derived."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from soko.iam.policy.model import Principal


class RequestContext:
    """Lower-cased view of the caller's context plus keys derived from the principal.

    Built lazily: most statements have no conditions or variables, and evaluate() should not pay for lowering the
    context or reading the clock on those.
    """

    __slots__ = ("_lower", "_principal", "_raw")

    def __init__(self, principal: Principal, context: Mapping[str, object]) -> None:
        self._principal = principal
        self._raw = context
        self._lower: dict[str, object] | None = None

    def get(self, key: str) -> object | None:
        """Value of a condition key given in lower case; None when the request does not carry it."""
        if self._lower is None:
            self._lower = {k.lower(): v for k, v in self._raw.items() if isinstance(k, str)}
        if key in self._lower:
            return self._lower[key]
        derived = self._derived(key)
        self._lower[key] = derived
        return derived

    def _derived(self, key: str) -> object | None:
        p = self._principal
        if key == "aws:principalaccount":
            return p.account
        if key == "aws:principalarn":
            # AWS reports the role, not the session, for assumed roles.
            return p.role_arn if p.type == "AssumedRole" and p.role_arn else p.arn
        if key == "aws:principaltype":
            return p.type
        if key == "aws:userid":
            return p.user_id
        if key == "aws:username":
            return p.username if p.type == "User" else None
        if key == "aws:principalisawsservice":
            return p.type == "Service"
        if key == "aws:principalservicename":
            return p.arn if p.type == "Service" else None
        if key.startswith("aws:principaltag/"):
            wanted = key[len("aws:principaltag/") :]
            return next((v for k, v in p.tags if k.lower() == wanted), None)
        if key == "aws:multifactorauthpresent":
            # AWS: absent for long-term keys, false for temporary credentials obtained without MFA (all of Soko's).
            return False if p.type == "AssumedRole" else None
        if key == "aws:tokenissuetime":
            if p.token_issued_at is None:
                return None
            return datetime.fromtimestamp(p.token_issued_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if key == "aws:currenttime":
            return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if key == "aws:epochtime":
            return int(datetime.now(UTC).timestamp())
        return None
