"""Presigned layer URLs (GetDownloadUrlForLayer): tokens ``<payload>.<mac>`` that name the account, repository,
digest, expiry and, when it was a VPC endpoint, the endpoint the URL was asked for on (its downloads are metered as
that endpoint's transfer), MACed under a key derived (HKDF, info ``soko/layer-urls``) from the master key's token
key, so every node sharing the master key verifies every other node's URLs. ``soko.oci.presigned`` serves them."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from soko.iam.service import Identity

URL_LIFETIME = 20 * 60  # seconds, as ECR's layer URLs
PREFIX = "/layers/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvalidLayerUrl(Exception):
    pass


class LayerGrant(NamedTuple):
    """What a valid layer URL grants: one blob of one repository, asked for on ``endpoint`` ("public" or a VPC
    endpoint id)."""

    account: str
    repository: str
    digest: str
    endpoint: str = "public"


class LayerUrlSigner:
    def __init__(self, token_key: bytes) -> None:
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"soko/layer-urls").derive(token_key)

    def token(
        self, account: str, repository: str, digest: str, now: float | None = None, endpoint: str = "public"
    ) -> tuple[str, float]:
        expires = int((time.time() if now is None else now) + URL_LIFETIME)
        claims: dict[str, object] = {"a": account, "r": repository, "d": digest, "e": expires}
        if endpoint != "public":
            claims["v"] = endpoint
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        return f"{payload}.{mac}", float(expires)

    def verify(self, token: str, now: float | None = None) -> tuple[str, str, str]:
        """(account, repository, digest) a valid, unexpired token names; InvalidLayerUrl otherwise."""
        return self.grant(token, now)[:3]

    def grant(self, token: str, now: float | None = None) -> LayerGrant:
        """What a valid, unexpired token grants; InvalidLayerUrl otherwise."""
        payload, dot, mac = token.partition(".")
        if not dot or not payload or not mac or len(token) > 4096:
            raise InvalidLayerUrl("malformed layer URL")
        expected = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, mac):
            raise InvalidLayerUrl("the layer URL's signature does not match")
        try:
            claims = json.loads(_unb64(payload))
            account, repository, digest, expires = claims["a"], claims["r"], claims["d"], claims["e"]
            endpoint = claims.get("v", "public")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidLayerUrl("malformed layer URL") from None
        if (time.time() if now is None else now) > expires:
            raise InvalidLayerUrl("the layer URL has expired; call GetDownloadUrlForLayer again")
        return LayerGrant(account, repository, digest, endpoint)


def signer_for(identity: Identity) -> LayerUrlSigner:
    """The signer for ``identity``: derived from its master key (once per key)."""
    return _signer(identity.master.token_key)


@functools.cache
def _signer(token_key: bytes) -> LayerUrlSigner:
    return LayerUrlSigner(token_key)


def layer_url(
    identity: Identity, scheme: str, host: str, account: str, repository: str, digest: str, endpoint: str = "public"
) -> str:
    token, _ = signer_for(identity).token(account, repository, digest, endpoint=endpoint)
    return f"{scheme}://{host}{PREFIX}{token}"


class DataUrls:
    """Layer URLs on the data listener (``data_listen``), where layer bodies are sent with sendfile(2); None where
    there is none for a request: no data listener, or an https request and no https ``data_url`` (the data listener
    speaks plain HTTP: a TLS client is sent there only through a TLS terminator the operator names, never to plain
    text, where the layer and its URL, a credential for 20 minutes, could be read on the way, and where Go clients
    resend the Authorization header of a same-host redirect)."""

    @classmethod
    def from_settings(cls, identity: Identity, settings) -> DataUrls:
        return cls(identity, settings.data_listen, settings.data_url, settings.data_redirect_min_bytes)

    def __init__(self, identity: Identity, data_listen: str, data_url: str = "", min_bytes: int = 0) -> None:
        self.identity = identity
        self.enabled = bool(data_listen)
        self.min_bytes = min_bytes  # smaller blobs are sent in-band: a redirect's round trip would cost more
        self._base = data_url.rstrip("/")
        self._port = data_listen.rpartition(":")[2]

    def base(self, scheme: str, host: str) -> str | None:
        if not self.enabled:
            return None
        if self._base:
            return self._base if scheme == "http" or self._base.startswith("https://") else None
        if scheme != "http" or not host:
            return None
        hostname = host[: host.rindex("]") + 1] if host.startswith("[") else host.rpartition(":")[0] or host
        return f"http://{hostname}:{self._port}"

    def url(
        self, scheme: str, host: str, account: str, repository: str, digest: str, endpoint: str = "public"
    ) -> str | None:
        base = self.base(scheme, host)
        if base is None:
            return None
        token, _ = signer_for(self.identity).token(account, repository, digest, endpoint=endpoint)
        return f"{base}{PREFIX}{token}"
