"""Per-request context: request id, source address, the listener (endpoint) it came in on, the registry account."""

from __future__ import annotations

import re

from aiohttp import web

from soko.access import RequestContext

CONTEXT_KEY = web.RequestKey("soko_context", RequestContext)
# (local host, local port) of each private-endpoint listener → its VPC endpoint id
ENDPOINTS_KEY = web.AppKey("soko_endpoints", dict)
ACCOUNT_KEY = web.RequestKey("soko_account", str)

_ACCOUNT_HOST = re.compile(r"(\d{12})\.dkr\.ecr\.")


def make_context(request: web.Request) -> RequestContext:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport else None
    source_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
    endpoint = "public"
    endpoints = request.app.get(ENDPOINTS_KEY)
    if endpoints and transport:
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            endpoint = endpoints.get((local[0], local[1]), "public")
    return RequestContext(
        source_ip=source_ip,
        endpoint=endpoint,
        secure_transport=request.secure,
        host=request.host or "",
        scheme=request.scheme,
    )


def registry_account(request: web.Request, default_account: str) -> str:
    """<account>.dkr.ecr.<region>.<domain> addresses that account's registry; any other host the default one."""
    account = request.get(ACCOUNT_KEY)
    if account is None:
        match = _ACCOUNT_HOST.match(request.host or "")
        account = match.group(1) if match else default_account
        request[ACCOUNT_KEY] = account
    return account
