"""Dispatch for /v2/: repository names contain '/', so routes are matched on the raw path by shape, last part first.

Also the middleware that turns domain errors into OCI error JSON, so no handler formats errors itself and bad input
never becomes a 500.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from soko.access import Principal
from soko.errors import SokoError, Unauthenticated, Unsupported
from soko.http.context import CONTEXT_KEY, make_context, registry_account
from soko.iam.authn import www_authenticate
from soko.names import validate_repository_name
from soko.oci import blobs, listing, manifests, uploads
from soko.oci.base import PRINCIPAL_KEY, OciContext
from soko.oci.errors import API_VERSION_HEADER, error_response, from_domain

log = logging.getLogger("soko.oci")

Handler = Callable[..., Awaitable[web.StreamResponse]]
# (pattern on the path after /v2/, {method: handler})
_ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    # Most frequent first: pulls are manifests and blobs.
    (
        re.compile(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    (re.compile(r"(?P<name>.+)/blobs/uploads/?"), {"POST": uploads.start_upload}),
    (
        re.compile(r"(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)"),
        {
            "PATCH": uploads.patch_upload,
            "PUT": uploads.put_upload,
            "GET": uploads.upload_status,
            "DELETE": uploads.cancel_upload,
        },
    ),
    (
        re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
        {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob},
    ),
    (re.compile(r"(?P<name>.+)/tags/list"), {"GET": listing.list_tags}),
    (re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)"), {"GET": listing.referrers}),
    (re.compile(r"_catalog"), {"GET": listing.catalog}),
]


class OciRouter:
    def __init__(self, ctx: OciContext, authenticate: Callable[[web.Request, str], Principal]) -> None:
        self.ctx = ctx
        self.authenticate = authenticate

    def install(self, app: web.Application) -> None:
        app.router.add_route("*", "/v2", self.handle)
        app.router.add_route("*", "/v2/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        head = request.method == "HEAD"
        request[CONTEXT_KEY] = make_context(request)
        try:
            account = registry_account(request, self.ctx.settings.account_id)
            request[PRINCIPAL_KEY] = self.authenticate(request, account)
            return await self._dispatch(request)
        except Unauthenticated as exc:
            return from_domain(exc, {"WWW-Authenticate": www_authenticate(request)}, head=head)
        except SokoError as exc:
            return from_domain(exc, head=head)
        except Exception:
            log.exception(
                "unexpected error on %s %s (request %s)", request.method, request.path, request[CONTEXT_KEY].request_id
            )
            return error_response(
                500,
                "UNKNOWN",
                f"internal error; the request id is {request[CONTEXT_KEY].request_id} — see the server log",
                head=head,
            )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        tail = raw[len("/v2/") :] if raw.startswith("/v2/") else ""
        if tail == "":
            if request.method not in ("GET", "HEAD"):
                raise Unsupported(f"{request.method} is not supported on /v2/")
            return web.Response(body=b"{}", content_type="application/json", headers=API_VERSION_HEADER)
        if "%" in tail:
            # Some clients escape the ':' of a digest. An escaped '/' or '.' would smuggle a path past the router.
            if re.search(r"%2[fFeE]|%5[cC]|%00", tail):
                return error_response(
                    400,
                    "NAME_INVALID",
                    "escaped '/', '.' or '\\' are not allowed in /v2/ paths",
                    head=request.method == "HEAD",
                )
            tail = urllib.parse.unquote(tail)
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(tail)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                return error_response(
                    405,
                    "UNSUPPORTED",
                    f"{request.method} is not supported on this endpoint",
                    headers={"Allow": ", ".join(sorted(methods))},
                    head=request.method == "HEAD",
                )
            args = match.groupdict()
            if "name" in args:
                _check_name(args["name"])
            return await handler(self.ctx, request, **args)
        return error_response(
            404, "NAME_UNKNOWN", f"no /v2/ endpoint matches '{tail[:200]}'", head=request.method == "HEAD"
        )


_VALID_NAMES: set[str] = set()


def _check_name(name: str) -> None:
    """validate_repository_name, remembering names that passed (the same few names arrive again and again)."""
    if name not in _VALID_NAMES:
        validate_repository_name(name)
        if len(_VALID_NAMES) > 100_000:
            _VALID_NAMES.clear()
        _VALID_NAMES.add(name)
