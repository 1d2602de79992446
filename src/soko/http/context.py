"""Per-request context: request id, source address, the listener (endpoint) it came in on, the registry account."""

from __future__ import annotations

import random
import re
import uuid

from aiohttp import web

from soko.access import RequestContext

CONTEXT_KEY = web.RequestKey("soko_context", RequestContext)
ENDPOINT_KEY = web.AppKey("soko_endpoint", str)

_ACCOUNT_HOST = re.compile(r"(\d{12})\.dkr\.ecr\.")


def make_context(request: web.Request) -> RequestContext:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    source_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
    return RequestContext(
        request_id=str(uuid.UUID(int=random.getrandbits(128), version=4)),  # no syscall, unlike uuid4()
        source_ip=source_ip,
        endpoint=request.app.get(ENDPOINT_KEY, "public"),
        secure_transport=request.secure,
    )


def registry_account(request: web.Request, default_account: str) -> str:
    """<account>.dkr.ecr.<region>.<domain> addresses that account's registry; any other host the default one."""
    match = _ACCOUNT_HOST.match(request.host or "")
    return match.group(1) if match else default_account
