"""What every /v2/ handler shares: the domain, the authorization hook, and small request helpers."""

from __future__ import annotations

from soko.access import Authorizer, repository_arn
from soko.config import Settings
from soko.errors import AccessDenied
from soko.http.bodies import BODY_BUDGET, BodyBudget
from soko.http.context import registry_account
from soko.http.messages import Request
from soko.registry import Registry
from soko.registry.models import RepoRef


class OciContext:
    def __init__(
        self, registry: Registry, authorizer: Authorizer, settings: Settings, bodies: BodyBudget | None = None
    ) -> None:
        self.registry = registry
        self.authorizer = authorizer
        self.settings = settings
        self.bodies = bodies or BodyBudget(BODY_BUDGET)  # manifests held whole (shared with POST / in SokoApp)

    def repo(self, request: Request, name: str) -> RepoRef:
        return RepoRef(registry_account(request, self.settings.account_id), name)

    def authorize(self, request: Request, ref: RepoRef, *actions: str, any_of: bool = False) -> None:
        """Each action must be allowed (or, with ``any_of``, at least one)."""
        principal = request.principal
        arn = repository_arn(self.settings.region, ref.account_id, ref.name)
        denied: AccessDenied | None = None
        for action in actions:
            try:
                self.authorizer.authorize(principal, action, arn, ref.account_id, request.context)
            except AccessDenied as exc:
                if not any_of:
                    raise
                denied = exc
            else:
                if any_of:
                    return
        if any_of and denied is not None:
            raise denied


def location(path: str) -> dict[str, str]:
    return {"Location": path}


def upload_range(size: int) -> str:
    # Distribution's convention: "0-0" for an empty upload, else the inclusive range held.
    return f"0-{max(size - 1, 0)}"
