"""What every /v2/ handler shares: the domain, the authorization hook, and small request helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from soko.access import Authorizer, Principal, repository_arn
from soko.config import Settings
from soko.errors import AccessDenied
from soko.http.context import CONTEXT_KEY, registry_account
from soko.registry import Registry
from soko.registry.models import RepoRef

T = TypeVar("T")
PRINCIPAL_KEY = web.RequestKey("soko_principal", Principal)


class OciContext:
    def __init__(self, registry: Registry, authorizer: Authorizer, settings: Settings) -> None:
        self.registry = registry
        self.authorizer = authorizer
        self.settings = settings

    def repo(self, request: web.Request, name: str) -> RepoRef:
        return RepoRef(registry_account(request, self.settings.account_id), name)

    def authorize(self, request: web.Request, ref: RepoRef, *actions: str, any_of: bool = False) -> None:
        """Each action must be allowed (or, with ``any_of``, at least one)."""
        principal = request[PRINCIPAL_KEY]
        arn = repository_arn(self.settings.region, ref.account_id, ref.name)
        denied: AccessDenied | None = None
        for action in actions:
            try:
                self.authorizer.authorize(principal, action, arn, ref.account_id, request[CONTEXT_KEY])
            except AccessDenied as exc:
                if not any_of:
                    raise
                denied = exc
            else:
                if any_of:
                    return
        if any_of and denied is not None:
            raise denied


async def offload(fn: Callable[..., T], *args) -> T:
    """Run blocking domain work (storage I/O, write transactions) on the thread pool."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def location(path: str) -> dict[str, str]:
    return {"Location": path}


def upload_range(size: int) -> str:
    # Distribution's convention: "0-0" for an empty upload, else the inclusive range held.
    return f"0-{max(size - 1, 0)}"
