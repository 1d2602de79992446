"""Authenticating /v2/ requests: HTTP Basic with user ``AWS`` and an ECR token's password (no anonymous access)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Protocol

from soko.access import Principal, RequestContext
from soko.audit import AuditLog
from soko.errors import TokenExpired, Unauthenticated
from soko.iam.credentials import CredentialStore
from soko.iam.tokens import TokenService


class _Headers(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def __contains__(self, key: str) -> bool: ...


class Request(Protocol):
    """What authentication reads of an HTTP request (``soko.http.messages.Request``; iam does not import http)."""

    @property
    def headers(self) -> _Headers: ...
    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def context(self) -> RequestContext | None: ...


LOGIN_HINT = "log in with: aws ecr get-login-password | docker login --username AWS --password-stdin <registry>"


def www_authenticate(request: Request) -> str:
    # The scheme actually served (or the one a trusted proxy reports): clients such as oras-py follow the realm.
    return f'Basic realm="{request.scheme}://{request.host}/",service="ecr.amazonaws.com"'


class RegistryAuthenticator:
    def __init__(self, credentials: CredentialStore, tokens: TokenService, audit: AuditLog) -> None:
        self.credentials = credentials
        self.tokens = tokens
        self.audit = audit
        # Authorization header → (access key id, token expiry, issued at): skips base64, HMAC and JSON on repeat
        # requests.
        # The key's validity is still checked on every request (credential lookups are generation-cached).
        self._verified: dict[str, tuple[str, float, float]] = {}

    def __call__(self, request: Request) -> Principal:
        context = request.context
        try:
            principal = self._authenticate(request)
        except (Unauthenticated, TokenExpired) as exc:
            # Clients ask anonymously first and log in on the 401 (the challenge): not a denial of anything.
            decision = "deny" if "authorization" in request.headers else "challenge"
            self.audit.record("authn", None, None, None, decision, exc.message, context)
            raise
        self.audit.record("authn", principal.arn, None, None, "allow", "ECR token", context)
        return principal

    def cached(self, request: Request) -> bool:
        """Whether authenticating ``request`` needs no database read: its token was verified before and its key's
        state is in the credential cache (so it may run on the event loop)."""
        header = request.headers.get("authorization", "")
        if not header:
            return True  # refused at once (the client's first, anonymous request)
        hit = self._verified.get(header)
        return hit is not None and hit[1] > self.credentials.ctx.clock() and self.credentials.cached(hit[0])

    def _authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        now = self.credentials.ctx.clock()
        hit = self._verified.get(header)
        if hit is not None and hit[1] > now:
            principal = self.credentials.is_valid(hit[0], issued_at=hit[2])
            if principal is not None:
                return principal
        scheme, _, value = header.partition(" ")
        if not header:
            raise Unauthenticated(f"authentication required; {LOGIN_HINT}")
        if scheme.lower() != "basic":
            raise Unauthenticated(f"unsupported authorization scheme '{scheme[:20]}'; use Basic. {LOGIN_HINT}")
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unauthenticated(f"malformed Basic credentials; {LOGIN_HINT}") from None
        if user != "AWS":
            raise Unauthenticated(f"the user name must be AWS; {LOGIN_HINT}")
        verified = self.tokens.verify(password, now)
        principal = self.credentials.is_valid(verified[0], issued_at=verified[2]) if verified else None
        if verified is None or principal is None:
            raise Unauthenticated(
                "the authorization token is not valid (not issued by this registry, altered, or its access key is"
                f" deactivated, deleted or rotated); {LOGIN_HINT}"
            )
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[header] = verified
        return principal
