"""``GET /layers/<token>``: the presigned layer URLs GetDownloadUrlForLayer hands out, served by Soko itself.

ECR answers GetDownloadUrlForLayer with a presigned S3 URL that needs no Authorization header and expires. Soko's
equivalent is a URL on its own listener whose token is ``<payload>.<mac>``: the payload (base64url JSON) names the
account, repository, digest and expiry; the MAC is HMAC-SHA256 under a key derived (HKDF, info
``soko/layer-urls``) from the server master key's token key, so every node sharing the master key verifies every
other node's URLs and nothing else can mint them. The token is checked, then the blob is streamed exactly like the
/v2/ blob GET (sendfile for local files, a redirect when the storage driver offers one, Range supported).

The repository must still hold the blob when the URL is used: deleting the image, then GC, revokes access.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from soko.digest import Digest
from soko.errors import BlobUnknown, DigestInvalid, RangeNotSatisfiable, RepositoryNotFound
from soko.oci.blobs import _stream, parse_range
from soko.registry.models import RepoRef

URL_LIFETIME = 20 * 60  # seconds, as ECR's layer URLs
PREFIX = "/layers/"
_INSTALLED = web.AppKey("soko_presigned_layers", object)


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


def signer_for(identity) -> LayerUrlSigner:
    """The signer for ``identity`` (soko.iam.service.Identity): derived from its master key."""
    signer = getattr(identity, "_layer_url_signer", None)
    if signer is None:
        signer = LayerUrlSigner(identity.master.token_key)
        identity._layer_url_signer = signer
    return signer


def layer_url(identity, scheme: str, host: str, account: str, repository: str, digest: str) -> str:
    token, _ = signer_for(identity).token(account, repository, digest)
    return f"{scheme}://{host}{PREFIX}{token}"


def _error(status: int, code: str, message: str, head: bool) -> web.Response:
    body = b"" if head else json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


class _StreamCtx:
    """What ``soko.oci.blobs._stream`` needs of an OciContext: the registry."""

    def __init__(self, registry) -> None:
        self.registry = registry


def install(app: web.Application, registry, identity) -> None:
    """Add ``GET|HEAD /layers/{token}`` to ``app`` (idempotent)."""
    if _INSTALLED in app:
        return
    app[_INSTALLED] = True
    stream_ctx = _StreamCtx(registry)

    async def handle(request: web.Request) -> web.StreamResponse:
        from soko.oci.base import offload

        head = request.method == "HEAD"
        try:
            ref, digest = signer_for(identity).verify(request.match_info["token"])
            Digest.parse(digest)
            blob = await offload(registry.blobs.open, ref, digest)
        except InvalidLayerUrl as exc:
            return _error(403, "DENIED", str(exc), head)
        except (BlobUnknown, RepositoryNotFound, DigestInvalid):
            return _error(404, "BLOB_UNKNOWN", "the layer is no longer in the repository", head)
        headers = {
            "Docker-Content-Digest": blob.digest,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{blob.digest}"',
            "Cache-Control": "private, max-age=600",
        }
        byte_range = None
        if request.headers.get("Range"):
            try:
                byte_range = parse_range(request.headers["Range"], blob.size)
            except RangeNotSatisfiable:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{blob.size}"})
        if head:
            return web.Response(status=200, headers={**headers, "Content-Length": str(blob.size)})
        if blob.redirect_url:
            return web.Response(status=307, headers={**headers, "Location": blob.redirect_url})
        if blob.local_path:
            return web.FileResponse(blob.local_path, headers=headers)  # sendfile(2), Range handled by aiohttp
        return await _stream(stream_ctx, request, blob.storage_path, blob.size, byte_range, headers)

    app.router.add_route("GET", PREFIX + "{token}", handle)
    app.router.add_route("HEAD", PREFIX + "{token}", handle)
