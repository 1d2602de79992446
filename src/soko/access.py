"""Who is calling and whether they may: the authorization hook every front end calls before acting.

``authorize`` is one call with ECR action names (``ecr:BatchGetImage`` …) for both the OCI and the ECR front end.
The default ``AllowAll`` authorizer is what the registry core runs with until the IAM engine plugs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    arn: str
    account_id: str
    type: str = "Account"  # Account (root) | User | AssumedRole | Anonymous
    user_id: str = ""
    username: str | None = None
    role_arn: str | None = None


ANONYMOUS = Principal(arn="anonymous", account_id="", type="Anonymous")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    source_ip: str
    endpoint: str = "public"  # listener the request arrived on: "public" or a VPC endpoint id
    secure_transport: bool = False
    host: str = ""  # the Host the client addressed (for URLs we hand back)
    scheme: str = "http"
    extra: dict = field(default_factory=dict)


class Authorizer(Protocol):
    def authorize(
        self,
        principal: Principal,
        action: str,
        resource_arn: str,
        resource_account: str | None,
        context: RequestContext,
    ) -> None:
        """Return when allowed; raise ``soko.errors.AccessDenied`` otherwise."""


class AllowAll:
    def authorize(self, principal, action, resource_arn, resource_account, context) -> None:
        return None


def repository_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:ecr:{region}:{account_id}:repository/{name}"
