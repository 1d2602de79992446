"""The web console's HTTP side: routes under /console/, the session cookie, CSRF, security headers, and rendering.

Pages are rendered on the server with Jinja2 (autoescape on for every template: each value is HTML-escaped) and
work without JavaScript; the one script, served by Soko like the stylesheet, only adds copy buttons and refreshes
a preview that is in progress. The Content-Security-Policy allows nothing but Soko's own files: no inline script or
style, no other origin (air-gapped installs need no CDN).
"""

from __future__ import annotations

import importlib.resources
import logging
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import jinja2

from soko.config import Settings
from soko.console import auditlog, deliveries, identities, pages, usage
from soko.console.sessions import COOKIE, ConsoleSessions, Session, SignInFailed, SignInThrottled
from soko.errors import (
    AccessDenied,
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    RepositoryNotFound,
    SokoError,
)
from soko.http.bodies import BodyBudget, BodyRefused, whole_body
from soko.http.context import make_context
from soko.http.messages import Request, Response
from soko.http.threads import offload
from soko.iam.api import IamApi
from soko.iam.service import Identity
from soko.names import validate_repository_name
from soko.registry import Registry

log = logging.getLogger("soko.console")

PREFIX = "/console/"
SIGNIN_COOKIE = "soko_console_signin"  # the sign-in form's CSRF token (double submit; no session exists yet)
MAX_FORM = 256 << 10  # a lifecycle policy is at most 30 KiB; form encoding can triple it
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it browsers send "Origin: null" with the console's own forms, and the Origin check
    # below could not tell them from another site's.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("soko.console", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.ChainableUndefined,  # optional parts of a page are simply absent
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda value: urllib.parse.quote(str(value), safe="/@:")
    return env


def _static_files() -> dict[str, tuple[bytes, str]]:
    out = {}
    for item in importlib.resources.files("soko.console").joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if suffix in STATIC_TYPES:
            out[item.name] = (item.read_bytes(), STATIC_TYPES[suffix])
    return out


def _error_text(exc: SokoError) -> str:
    """A validation error as the page shows it: the API's message and, where the domain gave one, its detail."""
    detail = exc.detail if isinstance(exc.detail, str) else None
    return f"{exc.message} ({detail})" if detail else exc.message


def _cookies(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in request.getall("cookie")[:8]:
        for part in header[:8192].split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name not in out:
                out[name] = value
    return out


class Console:
    """Everything under /console/ (``handle``), for ``SokoApp`` to route to."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        identity: Identity,
        bodies: BodyBudget,
        endpoints: Mapping[tuple[str, int], str] | None = None,
        iam: IamApi | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.identity = identity
        self.bodies = bodies
        self.endpoints = endpoints or {}
        self.iam = iam or IamApi(settings, identity)  # the IAM page runs the IAM API's own operations
        self.sessions = ConsoleSessions(registry.ctx, identity.credentials)
        self.templates = _environment()
        self.static = _static_files()

    # ---- responses --------------------------------------------------------------------------------------------
    def _page(
        self, template: str, status: int = 200, *, headers: Mapping[str, str] | None = None, **values
    ) -> Response:
        body = self.templates.get_template(template).render(**values).encode()
        return Response(status, {**SECURITY_HEADERS, **(headers or {})}, body, content_type="text/html; charset=utf-8")

    @staticmethod
    def _redirect(location: str, headers: Mapping[str, str] | None = None) -> Response:
        return Response(303, {**SECURITY_HEADERS, "Location": location, **(headers or {})})

    def _problem(self, status: int, title: str, message: str, session: Session | None = None) -> Response:
        return self._page("problem.html", status, title=title, message=message, session=session)

    def _cookie(self, request: Request, name: str, value: str, max_age: int) -> str:
        secure = "; Secure" if request.secure else ""
        return f"{name}={value}; Path={PREFIX}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"

    # ---- entry ------------------------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        start = time.perf_counter()
        response = await self._handle(request)
        # The page's time in Soko (routing, the database, rendering), for browsers' developer tools and the bench.
        elapsed = (time.perf_counter() - start) * 1000
        response.headers = {**response.headers, "Server-Timing": f"app;dur={elapsed:.1f}"}
        return response

    async def _handle(self, request: Request) -> Response:
        path = request.path
        request.operation = "console"
        if path == "/console":
            return self._redirect(PREFIX)
        if path.startswith(PREFIX + "static/"):
            return self._static(request, path[len(PREFIX + "static/") :])
        method = request.method
        if method not in ("GET", "HEAD", "POST"):
            return self._problem(405, "Method not allowed", f"{method} is not used by the console")
        context = make_context(request, self.endpoints)
        rest = path[len(PREFIX) :]
        if rest == "signin":
            return await (self._signin_form(request) if method != "POST" else self._signin(request))
        session = await offload(self.sessions.resolve, _cookies(request).get(COOKIE))
        if session is None:
            if method == "POST":
                return self._problem(403, "Signed out", "your console session has ended; sign in again")
            return self._redirect(PREFIX + "signin")
        request.principal = session.principal
        viewer = pages.Viewer(session.principal, context, self.registry, self.identity.authorizer)
        form: dict[str, str] = {}
        if method == "POST":
            refused = self._cross_site(request)
            if refused is not None:
                return refused
            try:
                form = await self._form(request)
            except pages.BadInput as exc:
                return self._problem(400, "Bad request", str(exc), session)
            if not self.sessions.csrf_ok(session, form.get("csrf")):
                return self._problem(403, "Refused", "the form's CSRF token is missing or wrong; reload the page")
        try:
            return await self._route(request, rest, method, session, viewer, form)
        except pages.BadInput as exc:
            return self._problem(400, "Bad request", str(exc), session)
        except AccessDenied:
            # A change the caller may not make (pages show panels for what they may not see).
            return self._problem(403, "Not allowed", "you are not allowed to do that here", session)
        except (RepositoryNotFound, NameInvalid):
            return self._problem(404, "Not found", "there is no such repository in this account", session)
        except SokoError as exc:
            if isinstance(exc, ManifestUnknown | BlobUnknown | DigestInvalid):
                return self._problem(404, "Not found", "there is no such image in this repository", session)
            return self._problem(400, "Refused", exc.message, session)

    async def _route(
        self, request: Request, rest: str, method: str, session: Session, viewer: pages.Viewer, form: dict[str, str]
    ) -> Response:
        common: dict[str, Any] = {"session": session}
        if rest == "":
            return self._redirect(PREFIX + "repositories")
        if rest == "signout" and method == "POST":
            await offload(self.sessions.revoke, session.id_sha256)
            self.identity.audit.record(
                "authn", session.principal.arn, None, None, "allow", "console sign-out", request.context
            )
            return self._redirect(PREFIX + "signin", {"Set-Cookie": self._cookie(request, COOKIE, "", 0)})
        if rest == "repositories" and method != "POST":
            values = await offload(pages.repositories_page, viewer, dict(request.query))
            status = 403 if values["denied"] else 200
            return self._page("repositories.html", status, **common, **values)
        if rest == "usage" and method != "POST":
            values = await offload(usage.usage_page, viewer, dict(request.query))
            return self._page("usage.html", 403 if values["denied"] else 200, **common, **values)
        if rest == "usage.csv" and method != "POST":
            found = await offload(usage.usage_csv, viewer, dict(request.query))
            if found is None:
                values = await offload(usage.usage_page, viewer, {})
                return self._page("usage.html", 403, **common, **values)
            filename, text = found
            headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}
            return Response(200, headers, text.encode(), content_type="text/csv; charset=utf-8")
        if rest == "audit" and method != "POST":
            values = await offload(auditlog.audit_page, viewer, self.identity.audit, dict(request.query))
            return self._page("audit.html", 403 if values["denied"] else 200, **common, **values)
        if rest in ("iam", "iam/keys"):
            return await self._iam(request, rest, method, session, viewer, form)
        if rest == "events" and method != "POST":
            values = await offload(deliveries.events_page, viewer, dict(request.query))
            return self._page("events.html", 403 if values["denied"] else 200, **common, **values, queued=None)
        if rest == "events/redeliver" and method == "POST":
            queued = await offload(deliveries.redeliver, viewer, form)
            values = await offload(deliveries.events_page, viewer, {})
            values.update(queued=queued, queued_target=form.get("target"))
            return self._page("events.html", **common, **values)
        if rest.startswith("repo/"):
            name, _, sub = rest[len("repo/") :].partition("/-/")
            validate_repository_name(name)
            return await self._repository(request, name, sub, method, common, viewer, form)
        return self._problem(404, "Not found", "there is no such console page", session)

    async def _iam(
        self, request: Request, rest: str, method: str, session: Session, viewer: pages.Viewer, form: dict[str, str]
    ) -> Response:
        values: dict[str, Any] = {"created": None, "refused": None}
        status = 200
        if rest == "iam/keys" and method == "POST":
            action = form.get("action")
            try:
                if action == "create":
                    values["created"] = await offload(identities.create_key, self.iam, viewer)
                elif action == "delete":
                    key = form.get("key", "")
                    await offload(identities.delete_key, self.iam, viewer, key, session.access_key_id)
                else:
                    raise pages.BadInput("unknown action; use the Create or Delete button")
            except identities.KeyRefused as exc:
                values["refused"], status = str(exc), 400
        elif rest != "iam" or method == "POST":
            return self._problem(404, "Not found", "there is no such console page", session)
        query = dict(request.query) if method != "POST" else {}
        values.update(await offload(identities.iam_page, self.iam, viewer, query, session.access_key_id))
        return self._page("iam.html", status, session=session, **values)

    async def _repository(
        self, request: Request, name: str, sub: str, method: str, common: dict, viewer: pages.Viewer, form: dict
    ) -> Response:
        base = f"{PREFIX}repo/{urllib.parse.quote(name)}"
        if sub == "" and method != "POST":
            values = await offload(pages.repository_page, viewer, name, dict(request.query))
            return self._page("repository.html", 403 if values["denied"] else 200, **common, **values)
        if sub == "settings" and method == "POST":
            await offload(pages.update_settings, viewer, name, form)
            return self._redirect(base)
        if sub.startswith("image/") and method != "POST":
            digest = sub[len("image/") :]
            host = request.host or self.settings.listen
            values = await offload(pages.image_page, viewer, name, digest, host)
            return self._page("image.html", 403 if values["denied"] else 200, **common, **values)
        if sub == "lifecycle":
            if method == "POST":
                return await self._lifecycle_post(name, common, viewer, form, base)
            values = await offload(pages.lifecycle_page, viewer, name)
            return self._page("lifecycle.html", 403 if values["denied"] else 200, **common, **values)
        if sub == "policy":
            if method == "POST":
                return await self._policy_post(name, common, viewer, form, base)
            values = await offload(pages.policy_page, viewer, name)
            return self._page("policy.html", 403 if values["denied"] else 200, **common, **values)
        return self._problem(404, "Not found", "there is no such console page", common["session"])

    async def _policy_post(self, name: str, common: dict, viewer: pages.Viewer, form: dict, base: str) -> Response:
        text = form.get("policy", "").replace("\r\n", "\n")
        action = form.get("action")
        if action not in ("save", "delete"):
            raise pages.BadInput("unknown action; use the Save or Delete button")
        try:
            if action == "save":
                await offload(pages.save_policy, viewer, self.identity, name, text, form.get("force") == "on")
            else:
                await offload(pages.delete_policy, viewer, name)
        except (AccessDenied, RepositoryNotFound, NameInvalid):
            raise
        except SokoError as exc:  # validation (or the lock-out check): shown in place, the text as submitted
            values = await offload(pages.policy_page, viewer, name)
            values.update(text=text, error=_error_text(exc), lockout=isinstance(exc, pages.PolicyLockOut))
            return self._page("policy.html", 400, **common, **values)
        return self._redirect(f"{base}/-/policy")

    async def _lifecycle_post(self, name: str, common: dict, viewer: pages.Viewer, form: dict, base: str) -> Response:
        text = form.get("policy", "").replace("\r\n", "\n")  # browsers send a textarea's lines as CRLF
        action = form.get("action")
        if action not in ("save", "preview"):
            raise pages.BadInput("unknown action; use the Save or Preview button")
        try:
            if action == "save":
                await offload(pages.save_lifecycle, viewer, name, text)
            else:
                await offload(pages.start_preview, viewer, name, text)
        except (AccessDenied, RepositoryNotFound, NameInvalid):
            raise
        except SokoError as exc:  # validation: shown in place, with the text as it was submitted
            values = await offload(pages.lifecycle_page, viewer, name)
            values.update(text=text, error=_error_text(exc))
            return self._page("lifecycle.html", 400, **common, **values)
        return self._redirect(f"{base}/-/lifecycle")

    # ---- sign-in ----------------------------------------------------------------------------------------------
    async def _signin_form(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        cookie = self._cookie(request, SIGNIN_COOKIE, token, 3600)
        return self._page("signin.html", status, headers={"Set-Cookie": cookie}, csrf=token, error=error, session=None)

    async def _signin(self, request: Request) -> Response:
        refused = self._cross_site(request)
        if refused is not None:
            return refused
        try:
            form = await self._form(request)
        except pages.BadInput as exc:
            return await self._signin_form(request, str(exc), 400)
        expected = _cookies(request).get(SIGNIN_COOKIE, "")
        presented = form.get("csrf", "")
        if not expected or not secrets.compare_digest(expected.encode(), presented.encode()):
            return await self._signin_form(request, "the sign-in form expired; try again", 403)
        context = request.context
        source_ip = context.source_ip if context is not None else ""
        key_id = form.get("access_key_id", "")
        try:
            principal = await offload(
                self.sessions.verify,
                key_id,
                form.get("secret_access_key", ""),
                form.get("session_token", ""),
                source_ip,
            )
            token, _ = await offload(self.sessions.create, key_id.strip(), source_ip)
        except SignInThrottled as exc:
            self.identity.audit.record("authn", None, None, None, "deny", "console sign-in throttled", context)
            return await self._signin_form(request, str(exc), 429)
        except SignInFailed as exc:
            self.identity.audit.record("authn", None, None, None, "deny", "console sign-in: bad credentials", context)
            return await self._signin_form(request, str(exc), 401)
        self.identity.audit.record("authn", principal.arn, None, None, "allow", "console sign-in", context)
        max_age = int(self.settings.console_session_lifetime)
        return self._redirect(PREFIX + "repositories", {"Set-Cookie": self._cookie(request, COOKIE, token, max_age)})

    # ---- request checks ---------------------------------------------------------------------------------------
    def _cross_site(self, request: Request) -> Response | None:
        """A change must come from the console's own pages: refuse another site's form (Origin, Sec-Fetch-Site),
        whatever cookies it carried (SameSite=Strict keeps them away in current browsers; this does in all)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return self._problem(403, "Refused", "a change must come from this console's own pages")
        if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            return self._problem(403, "Refused", "a change must come from this console's own pages")
        return None

    async def _form(self, request: Request) -> dict[str, str]:
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise pages.BadInput("the console accepts only form posts (application/x-www-form-urlencoded)")
        try:
            async with whole_body(request, MAX_FORM, self.bodies) as body:
                text = body.decode("utf-8")
        except BodyRefused as exc:
            raise pages.BadInput(exc.message) from None
        except UnicodeDecodeError:
            raise pages.BadInput("the form is not UTF-8") from None
        try:
            pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=32, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise pages.BadInput("the form is malformed") from None
        form: dict[str, str] = {}
        for key, value in pairs:
            if "\x00" in value:
                raise pages.BadInput("the form holds a NUL character")
            form.setdefault(key, value)
        return form

    def _static(self, request: Request, name: str) -> Response:
        found = self.static.get(name)
        if found is None or request.method not in ("GET", "HEAD"):
            return Response(404, SECURITY_HEADERS, b"not found\n", content_type="text/plain; charset=utf-8")
        body, content_type = found
        headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
        return Response(200, headers, body, content_type=content_type)
