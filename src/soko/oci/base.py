"""What every /v2/ handler shares: the domain, the authorization hook, and small request helpers."""

from __future__ import annotations

import re
from collections.abc import Callable

from soko.access import Authorizer, Principal, RequestContext, repository_arn
from soko.config import Settings
from soko.errors import AccessDenied, SokoError
from soko.http.bodies import BODY_BUDGET, BodyBudget
from soko.http.context import registry_account
from soko.http.messages import Request
from soko.http.threads import offload
from soko.iam.layer_urls import DataUrls
from soko.pullthrough.cache import PullThroughCache
from soko.registry import Registry
from soko.registry.models import RepoRef


class OciContext:
    def __init__(
        self,
        registry: Registry,
        authorizer: Authorizer,
        settings: Settings,
        bodies: BodyBudget | None = None,
        pull_through: PullThroughCache | None = None,
        data_urls: DataUrls | None = None,
    ) -> None:
        self.registry = registry
        self.data_urls = data_urls  # large cached blobs are sent from the data listener (None or off: in-band)
        self.authorizer = authorizer
        self.settings = settings
        self.bodies = bodies or BodyBudget(BODY_BUDGET)  # manifests held whole (shared with POST / in SokoApp)
        self.pull_through = pull_through  # pulls under a pull-through cache rule's prefix (None: no caches)

    def repo(self, request: Request, name: str) -> RepoRef:
        return RepoRef(registry_account(request, self.settings.account_id), name)

    async def authorize(self, request: Request, ref: RepoRef, *actions: str, any_of: bool = False) -> None:
        """Each action must be allowed (or, with ``any_of``, at least one). Decided on the event loop when every
        decision is in memory, else on a thread (docs/architecture.md: no database read on the loop)."""
        arn = repository_arn(self.settings.region, ref.account_id, ref.name)
        await self.authorize_arn(request, arn, ref.account_id, *actions, any_of=any_of)

    async def authorize_arn(
        self, request: Request, arn: str, account: str, *actions: str, any_of: bool = False
    ) -> None:
        principal, context = principal_of(request), context_of(request)
        if all(self.authorizer.cached(principal, action, arn, account, context) for action in actions):
            self._authorize(principal, context, arn, account, actions, any_of)
        else:
            await offload(self._authorize, principal, context, arn, account, actions, any_of)

    def authorizer_for(self, request: Request, ref: RepoRef) -> Callable[[str], None]:
        """A blocking check of one ECR action on ``ref`` for the caller (what the pull-through cache asks on a
        thread before it imports from an upstream: ecr:BatchImportUpstreamImage, ecr:CreateRepository)."""
        arn = repository_arn(self.settings.region, ref.account_id, ref.name)
        principal, context = principal_of(request), context_of(request)

        def check(action: str) -> None:
            self._authorize(principal, context, arn, ref.account_id, (action,), False)

        return check

    def _authorize(
        self,
        principal: Principal,
        context: RequestContext,
        arn: str,
        account: str,
        actions: tuple[str, ...],
        any_of: bool,
    ) -> None:
        denied: AccessDenied | None = None
        for action in actions:
            try:
                self.authorizer.authorize(principal, action, arn, account, context)
            except AccessDenied as exc:
                if not any_of:
                    raise
                denied = exc
            else:
                if any_of:
                    return
        if any_of and denied is not None:
            raise denied


def context_of(request: Request) -> RequestContext:
    """The request's context, which the router sets before any handler runs."""
    assert request.context is not None
    return request.context


def principal_of(request: Request) -> Principal:
    """The authenticated caller, which the router sets before any handler runs."""
    assert request.principal is not None
    return request.principal


def location(path: str) -> dict[str, str]:
    return {"Location": path}


def upload_range(size: int) -> str:
    # Distribution's convention: "0-0" for an empty upload, else the inclusive range held.
    return f"0-{max(size - 1, 0)}"


REPLICATED_FROM = "soko-replicated-from"
_REPLICATED_FROM = re.compile(r"([a-z]{2}(?:-[a-z]+)+-\d{1,2})/(\d{12})")


def replicated_from(request: Request, invalid: type[SokoError]) -> tuple[str, str] | None:
    """A push by another region's replication (``Soko-Replicated-From: <region>/<account>``): (region, account)."""
    value = request.headers.get(REPLICATED_FROM)
    if value is None:
        return None
    match = _REPLICATED_FROM.fullmatch(value)
    if match is None:
        raise invalid("Soko-Replicated-From must be <source region>/<source account id>, e.g. us-east-1/111111111111")
    return match.group(1), match.group(2)
