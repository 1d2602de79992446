"""ECR authorization tokens: ``base64("AWS:" + password)`` where the password names the caller's access key.

The password is ``v1.<payload>.<mac>``: payload = base64url JSON ``{"k": access key id, "x": expiry, "i": issued
at}``, mac =
HMAC-SHA256 under a key derived from the master key. Nothing is stored: a token is valid while its MAC checks, it
has not expired, and the key it names still resolves to a usable principal (so it dies with a deleted or
deactivated key, or an expired session), and it was issued after the key's current secret was set (so a rotated
root key's tokens die with the old secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from soko.errors import TokenExpired

TOKEN_LIFETIME = 12 * 3600.0
# ECR's words for an expired token (docker shows "denied: Your authorization token has expired. ...").
EXPIRED_MESSAGE = "Your authorization token has expired. Reauthenticate and try again."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenService:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, access_key_id: str, now: float, not_after: float | None = None) -> tuple[str, float]:
        """Returns (authorizationToken, expiresAt)."""
        expires = now + TOKEN_LIFETIME
        if not_after is not None:
            expires = min(expires, not_after)
        claims = {"k": access_key_id, "x": int(expires), "i": round(now, 3)}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._key, f"v1.{payload}".encode(), hashlib.sha256).digest())
        password = f"v1.{payload}.{mac}"
        return base64.b64encode(f"AWS:{password}".encode()).decode(), float(int(expires))

    def verify(self, password: str, now: float) -> tuple[str, float, float] | None:
        """(access key id, expiry, issued at) of a valid, unexpired password; None for one that is not ours or was
        tampered with; TokenExpired for a genuine one past its expiry."""
        parts = password.split(".")
        if len(parts) != 3 or parts[0] != "v1" or len(password) > 4096:
            return None
        expected = _b64(hmac.new(self._key, f"v1.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
            key_id, expires = claims["k"], claims["x"]
            # tokens from before "i" existed: the earliest they can have been issued
            issued = claims.get("i", expires - TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not isinstance(key_id, str) or not isinstance(expires, int):
            return None
        if expires <= now:  # genuine (the MAC checked) but too old: say so, unlike a wrong or forged token
            raise TokenExpired(EXPIRED_MESSAGE)
        if not isinstance(issued, int | float):
            return None
        return key_id, float(expires), float(issued)
