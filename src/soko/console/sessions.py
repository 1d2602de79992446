"""Console sign-in: an access key id + secret (and an STS session token for an assumed role's keys), verified as the
IAM layer verifies secrets, answered by a server-side session (``console_sessions``) named by a random cookie.

The cookie holds 32 random bytes; the table holds only their SHA-256, so neither a copy of the table nor the logs
sign anyone in. Every request re-resolves the session's access key through the credential store: a deactivated or
deleted key, an expired STS session or a deleted role ends the console session at once. Sign-out deletes the row.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

import sqlalchemy as sa

from soko.access import Principal
from soko.iam.credentials import CredentialStore
from soko.kernel.context import DomainContext
from soko.meta.schema import console_sessions

COOKIE = "soko_console"
TOUCH_EVERY = 60.0  # last_seen_at is written at most this often per session (idle expiry is coarse by that much)
MAX_KEY_ID = 128
MAX_SECRET = 256
MAX_SESSION_TOKEN = 4096


class SignInFailed(Exception):
    """The credentials did not verify; one message for every cause, so a caller learns nothing about which."""


class SignInThrottled(Exception):
    """Too many failed sign-ins from this address or for this key lately."""


@dataclass(frozen=True, slots=True)
class Session:
    id_sha256: str
    access_key_id: str
    principal: Principal
    csrf_token: str
    created_at: float
    expires_at: float


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class FailureLimiter:
    """Failed sign-ins per source address and per access key id, in a sliding window (this process's memory: with
    several workers each counts its own, so the effective limit is at most workers times the limit)."""

    def __init__(self, limit: int, window: float, clock=time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blocked(self, *keys: str) -> bool:
        now = self.clock()
        with self._lock:
            return any((t := self._recent(k, now)) is not None and len(t) >= self.limit for k in keys)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of distinct keys: forget rather than grow without bound
                self._failures.clear()
            for key in keys:
                self._recent(key, now)
                self._failures.setdefault(key, deque(maxlen=self.limit)).append(now)


class ConsoleSessions:
    def __init__(self, ctx: DomainContext, credentials: CredentialStore) -> None:
        self.ctx = ctx
        self.credentials = credentials
        settings = ctx.settings
        self.idle_timeout = settings.console_idle_timeout
        self.lifetime = settings.console_session_lifetime
        self.by_address = FailureLimiter(limit=20, window=300.0)
        self.by_key = FailureLimiter(limit=5, window=300.0)

    # ---- sign-in ----------------------------------------------------------------------------------------------
    def verify(self, access_key_id: str, secret: str, session_token: str, source_ip: str) -> Principal:
        """The principal behind these credentials; SignInFailed (one message whatever was wrong) or
        SignInThrottled. Secrets are compared in constant time; none of them is logged or stored."""
        key_id = access_key_id.strip()
        address_key, key_key = f"ip:{source_ip}", f"key:{key_id[:MAX_KEY_ID]}"
        if self.by_address.blocked(address_key) or self.by_key.blocked(key_key):
            raise SignInThrottled("too many failed sign-ins; wait a few minutes and try again")
        principal = self._check(key_id, secret, session_token)
        if principal is None:
            self.by_address.failed(address_key)
            self.by_key.failed(key_key)
            raise SignInFailed("the access key id, secret access key or session token is not valid")
        return principal

    def _check(self, key_id: str, secret: str, session_token: str) -> Principal | None:
        if not key_id or len(key_id) > MAX_KEY_ID or not secret or len(secret) > MAX_SECRET:
            return None
        if len(session_token) > MAX_SESSION_TOKEN:
            return None
        resolved = self.credentials.lookup(key_id)
        if resolved is None:
            hmac.compare_digest(secret.encode(), b"x" * len(secret))  # about the same work as a real comparison
            return None
        if not hmac.compare_digest(resolved.secret_access_key.encode(), secret.encode()):
            return None
        if resolved.session_token_sha256 is not None:  # an STS session's keys need its session token too
            if not hmac.compare_digest(_sha256(session_token), resolved.session_token_sha256):
                return None
        elif session_token:
            return None  # a long-term key comes with no session token
        return self.credentials.is_valid(key_id)  # expired sessions (and keys gone meanwhile) end here

    def create(self, access_key_id: str, source_ip: str) -> tuple[str, Session]:
        """A new session for a verified key: (the cookie value, the session)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.ctx.clock()
        expires = now + self.lifetime
        principal = self.credentials.is_valid(access_key_id)
        if principal is None:
            raise SignInFailed("the access key id, secret access key or session token is not valid")
        with self.ctx.write() as conn:
            conn.execute(
                sa.delete(console_sessions).where(console_sessions.c.expires_at < now)  # sweep: the table stays small
            )
            conn.execute(
                sa.insert(console_sessions).values(
                    id_sha256=_sha256(token),
                    access_key_id=access_key_id,
                    csrf_token=csrf,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                    source_ip=source_ip[:64],
                )
            )
        return token, Session(_sha256(token), access_key_id, principal, csrf, now, expires)

    # ---- each request -----------------------------------------------------------------------------------------
    def resolve(self, cookie_value: str | None) -> Session | None:
        """The live session a cookie names, or None (unknown, signed out, idle or past its lifetime, or its key is
        no longer valid: such a session is deleted)."""
        if not cookie_value or len(cookie_value) > 128:
            return None
        id_sha256 = _sha256(cookie_value)
        now = self.ctx.clock()
        with self.ctx.db.read() as conn:
            row = conn.execute(sa.select(console_sessions).where(console_sessions.c.id_sha256 == id_sha256)).first()
        if row is None:
            return None
        principal = self.credentials.is_valid(row.access_key_id)
        if now >= row.expires_at or now - row.last_seen_at >= self.idle_timeout or principal is None:
            self.revoke(id_sha256)
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            with self.ctx.write() as conn:
                conn.execute(
                    sa.update(console_sessions)
                    .where(console_sessions.c.id_sha256 == id_sha256)
                    .values(last_seen_at=now)
                )
        return Session(id_sha256, row.access_key_id, principal, row.csrf_token, row.created_at, row.expires_at)

    def revoke(self, id_sha256: str) -> None:
        with self.ctx.write() as conn:
            conn.execute(sa.delete(console_sessions).where(console_sessions.c.id_sha256 == id_sha256))

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(session.csrf_token.encode(), (presented or "").encode())
