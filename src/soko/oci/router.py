"""Dispatch for /v2/: repository names contain '/', so routes are matched on the raw path by shape, last part first.

Also the middleware that turns domain errors into OCI error JSON, so no handler formats errors itself and bad input
never becomes a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from soko.errors import NameInvalid, SokoError, Unauthenticated, Unsupported
from soko.http.context import make_context, registry_account
from soko.http.messages import AnyResponse, Request, Response
from soko.http.threads import offload
from soko.iam.authn import RegistryAuthenticator, www_authenticate
from soko.names import validate_repository_name
from soko.oci import blobs, listing, manifests, uploads
from soko.oci.base import OciContext
from soko.oci.errors import API_VERSION_HEADER, error_response, from_domain
from soko.storage_full import RETRY_AFTER, storage_full

log = logging.getLogger("soko.oci")

Handler = Callable[..., Awaitable[AnyResponse]]
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
    def __init__(
        self,
        ctx: OciContext,
        authenticate: RegistryAuthenticator,
        endpoints: dict[tuple[str, int], str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.authenticate = authenticate
        self.endpoints = endpoints or {}

    async def handle(self, request: Request) -> AnyResponse:
        head = request.method == "HEAD"
        context = make_context(request, self.endpoints)
        try:
            authenticate = self.authenticate
            if authenticate.cached(request):
                request.principal = authenticate(request)
            else:
                request.principal = await offload(authenticate, request)
            registry_account(request, self.ctx.settings.account_id)  # after authn: the bare host is the caller's
            return await self._dispatch(request)
        except Unauthenticated as exc:
            return from_domain(exc, {"WWW-Authenticate": www_authenticate(request)}, head=head)
        except SokoError as exc:
            return from_domain(exc, head=head)
        except Exception as exc:
            full = storage_full(exc)
            if full is not None:
                return from_domain(full, {"Retry-After": RETRY_AFTER}, head=head)
            log.exception("unexpected error on %s %s (request %s)", request.method, request.path, context.request_id)
            return error_response(
                500,
                "UNKNOWN",
                f"internal error; the request id is {context.request_id} — see the server log",
                head=head,
            )

    async def _dispatch(self, request: Request) -> AnyResponse:
        # The server hands over the path percent-decoded (clients escape a digest's ':'), so routing and the name
        # checks below see exactly what the domain will: an escaped '/' or '.' is just a '/' or '.' and the
        # repository-name grammar refuses '..', empty components and control characters.
        path = request.path
        tail = path[len("/v2/") :] if path.startswith("/v2/") else ""
        if tail == "":
            if request.method not in ("GET", "HEAD"):
                raise Unsupported(f"{request.method} is not supported on /v2/")
            return _PING
        if "\x00" in tail:  # (PostgreSQL text cannot hold it: refuse before any lookup)
            raise NameInvalid("a NUL character is not allowed in /v2/ paths")
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
            request.operation = _OPERATIONS[handler]
            return await handler(self.ctx, request, **args)
        return error_response(
            404, "NAME_UNKNOWN", f"no /v2/ endpoint matches '{tail[:200]}'", head=request.method == "HEAD"
        )


_OPERATIONS = {handler: f"oci:{handler.__name__}" for _, methods in _ROUTES for handler in methods.values()}
_PING = Response(200, API_VERSION_HEADER, b"{}", "application/json")
_VALID_NAMES: set[str] = set()


def _check_name(name: str) -> None:
    """validate_repository_name, remembering names that passed (the same few names arrive again and again)."""
    if name not in _VALID_NAMES:
        validate_repository_name(name)
        if len(_VALID_NAMES) > 100_000:
            _VALID_NAMES.clear()
        _VALID_NAMES.add(name)
