"""Authenticating /v2/ requests: HTTP Basic with user ``AWS`` and an ECR token's password (no anonymous access)."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from soko.access import Principal
from soko.audit import AuditLog
from soko.errors import Unauthenticated
from soko.http.context import CONTEXT_KEY
from soko.iam.credentials import CredentialStore
from soko.iam.tokens import TokenService

LOGIN_HINT = "log in with: aws ecr get-login-password | docker login --username AWS --password-stdin <registry>"


def www_authenticate(request: web.Request) -> str:
    return f'Basic realm="https://{request.host}/",service="ecr.amazonaws.com"'


class RegistryAuthenticator:
    def __init__(self, credentials: CredentialStore, tokens: TokenService, audit: AuditLog) -> None:
        self.credentials = credentials
        self.tokens = tokens
        self.audit = audit

    def __call__(self, request: web.Request, account_id: str) -> Principal:
        context = request.get(CONTEXT_KEY)
        try:
            principal = self._authenticate(request)
        except Unauthenticated as exc:
            self.audit.record("authn", None, None, None, "deny", exc.message, context)
            raise
        self.audit.record("authn", principal.arn, None, None, "allow", "ECR token", context)
        return principal

    def _authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
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
        now = self.credentials.ctx.clock()
        key_id = self.tokens.verify(password, now)
        principal = self.credentials.is_valid(key_id) if key_id else None
        if principal is None:
            raise Unauthenticated(f"the authorization token is invalid or has expired; {LOGIN_HINT}")
        return principal
