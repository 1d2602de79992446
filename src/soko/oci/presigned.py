"""``GET /layers/<token>``: the presigned layer URLs GetDownloadUrlForLayer hands out, served by Soko itself.

ECR answers GetDownloadUrlForLayer with a presigned S3 URL that needs no Authorization header and expires. Soko's
equivalent is a URL on its own listener whose token is ``<payload>.<mac>``: the payload (base64url JSON) names the
account, repository, digest and expiry; the MAC is HMAC-SHA256 under a key derived (HKDF, info
``soko/layer-urls``) from the server master key's token key, so every node sharing the master key verifies every
other node's URLs and nothing else can mint them. The token is checked, then the blob is streamed exactly like the
/v2/ blob GET (read ahead from the driver, a redirect when the driver offers one, Range supported).

The repository must still hold the blob when the URL is used: deleting the image, then GC, revokes access.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from soko.digest import Digest
from soko.errors import BlobUnknown, DigestInvalid, RepositoryNotFound
from soko.http.messages import AnyResponse, Request, error_response
from soko.http.threads import offload
from soko.iam.service import Identity
from soko.oci.blobs import blob_response
from soko.registry import Registry
from soko.registry.models import RepoRef

URL_LIFETIME = 20 * 60  # seconds, as ECR's layer URLs
PREFIX = "/layers/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvalidLayerUrl(Exception):
    pass


class LayerUrlSigner:
    def __init__(self, token_key: bytes) -> None:
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"soko/layer-urls").derive(token_key)

    def token(self, account: str, repository: str, digest: str, now: float | None = None) -> tuple[str, float]:
        expires = int((time.time() if now is None else now) + URL_LIFETIME)
        payload = _b64(
            json.dumps({"a": account, "r": repository, "d": digest, "e": expires}, separators=(",", ":")).encode()
        )
        mac = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        return f"{payload}.{mac}", float(expires)

    def verify(self, token: str, now: float | None = None) -> tuple[RepoRef, str]:
        payload, dot, mac = token.partition(".")
        if not dot or not payload or not mac or len(token) > 4096:
            raise InvalidLayerUrl("malformed layer URL")
        expected = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, mac):
            raise InvalidLayerUrl("the layer URL's signature does not match")
        try:
            claims = json.loads(_unb64(payload))
            account, repository, digest, expires = claims["a"], claims["r"], claims["d"], claims["e"]
        except (ValueError, KeyError, TypeError):
            raise InvalidLayerUrl("malformed layer URL") from None
        if (time.time() if now is None else now) > expires:
            raise InvalidLayerUrl("the layer URL has expired; call GetDownloadUrlForLayer again")
        return RepoRef(account, repository), digest


def signer_for(identity: Identity) -> LayerUrlSigner:
    """The signer for ``identity``: derived from its master key (once per key)."""
    return _signer(identity.master.token_key)


@functools.cache
def _signer(token_key: bytes) -> LayerUrlSigner:
    return LayerUrlSigner(token_key)


def layer_url(identity: Identity, scheme: str, host: str, account: str, repository: str, digest: str) -> str:
    token, _ = signer_for(identity).token(account, repository, digest)
    return f"{scheme}://{host}{PREFIX}{token}"


class PresignedLayers:
    """``GET|HEAD /layers/<token>``."""

    def __init__(self, registry: Registry, identity: Identity) -> None:
        self.registry = registry
        self.identity = identity

    async def handle(self, request: Request) -> AnyResponse:
        head = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "UNSUPPORTED", f"{request.method} is not supported on layer URLs", head=head)
        try:
            ref, digest = signer_for(self.identity).verify(request.path[len(PREFIX) :])
            Digest.parse(digest)
            blob = await offload(self.registry.blobs.open, ref, digest)
        except InvalidLayerUrl as exc:
            return error_response(403, "DENIED", str(exc), head=head)
        except (BlobUnknown, RepositoryNotFound, DigestInvalid):
            return error_response(404, "BLOB_UNKNOWN", "the layer is no longer in the repository", head=head)
        headers = {
            "Docker-Content-Digest": blob.digest,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{blob.digest}"',
            "Cache-Control": "private, max-age=600",
        }
        response, _ = await blob_response(self.registry, request, blob, headers)
        return response
