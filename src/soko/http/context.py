"""Per-request context: request id, source address, the listener (endpoint) it came in on, the registry account."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from soko.access import RequestContext
from soko.http.messages import Request

_ACCOUNT_HOST = re.compile(r"(\d{12})\.dkr\.ecr\.")


@lru_cache(maxsize=4096)
def split_address(address: str) -> tuple[str, int]:
    """'ip:port' or '[ipv6]:port' (as the server reports peers and listeners) → (ip, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or address, int(port) if port.isdigit() else 0


def make_context(request: Request, endpoints: Mapping[tuple[str, int], str]) -> RequestContext:
    """``endpoints``: (local host, local port) of each private-endpoint listener → its VPC endpoint id."""
    endpoint = endpoints.get(split_address(request.server), "public") if endpoints else "public"
    context = RequestContext(
        source_ip=split_address(request.client)[0] if request.client else "127.0.0.1",
        endpoint=endpoint,
        secure_transport=request.secure,
        host=request.host,
        scheme=request.scheme,
        user_agent=request.headers.get("user-agent"),
    )
    request.context = context
    return context


def registry_account(request: Request, default_account: str) -> str:
    """Whose registry a /v2/ request addresses: ``<account>.dkr.ecr.<region>.<domain>`` names it (ECR's form, and
    the only way to reach another account's repositories); any other host (the bare host, an IP, a load balancer's
    name) serves the authenticated caller's own account, so every account can push and pull without DNS set-up.
    Called after authentication; the default account only when no principal is known."""
    account = request.account
    if account is None:
        match = _ACCOUNT_HOST.match(request.host)
        if match:
            account = match.group(1)
        elif request.principal is not None and request.principal.account_id:
            account = request.principal.account_id
        else:
            account = default_account
        request.account = account
    return account
