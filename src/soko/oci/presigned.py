"""``GET /layers/<token>``: the presigned layer URLs GetDownloadUrlForLayer hands out, served by Soko itself.

ECR answers GetDownloadUrlForLayer with a presigned S3 URL that needs no Authorization header and expires. Soko's
equivalent is a URL on its own listener whose token is ``<payload>.<mac>``: the payload (base64url JSON) names the
account, repository, digest and expiry; the MAC is HMAC-SHA256 under a key derived (HKDF, info
``soko/layer-urls``) from the server master key's token key, so every node sharing the master key verifies every
other node's URLs and nothing else can mint them. The token is checked, then the blob is streamed exactly like the
/v2/ blob GET (read ahead from the driver, a redirect when the driver offers one, Range supported).

The repository must still hold the blob when the URL is used: deleting the image, then GC, revokes access.

Every download of a URL is metered here, as S3 bills each GET of a presigned URL: once its answer is over, a
``blob_get`` of the body bytes that went out (all of them, or up to where the client went away), for the URL's
repository, from the downloading address, on the endpoint the URL was asked for on. Neither GetDownloadUrlForLayer
nor the /v2/ GET that answers 307 here meters anything, so a redirect followed once counts once and a URL used
twice counts twice. Refusals and HEADs send no layer and count nothing.
"""

from __future__ import annotations

from soko.access import RequestContext
from soko.digest import Digest
from soko.errors import BlobUnknown, DigestInvalid, RepositoryNotFound, SokoError
from soko.http.context import split_address
from soko.http.messages import AnyResponse, FileResponse, Request, StreamResponse, error_response
from soko.http.threads import offload
from soko.iam.layer_urls import PREFIX, InvalidLayerUrl, LayerGrant, signer_for
from soko.iam.service import Identity
from soko.oci.blobs import blob_response, stream_fetch
from soko.oci.errors import from_domain
from soko.pullthrough.cache import BlobFetch, PullThroughCache
from soko.registry import Registry
from soko.registry.models import BlobContent, RepoRef


class PresignedLayers:
    """``GET|HEAD /layers/<token>``."""

    def __init__(self, registry: Registry, identity: Identity, pull_through: PullThroughCache | None = None) -> None:
        self.registry = registry
        self.identity = identity
        self.pull_through = pull_through  # a layer GetDownloadUrlForLayer started fetching is served through it

    async def handle(self, request: Request) -> AnyResponse:
        head = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "UNSUPPORTED", f"{request.method} is not supported on layer URLs", head=head)
        try:
            grant = signer_for(self.identity).grant(request.path[len(PREFIX) :])
            ref, digest = RepoRef(grant.account, grant.repository), grant.digest
            Digest.parse(digest)
            found = await offload(self._open, ref, digest)
        except InvalidLayerUrl as exc:
            return error_response(403, "DENIED", str(exc), head=head)
        except (BlobUnknown, RepositoryNotFound, DigestInvalid):
            return error_response(404, "BLOB_UNKNOWN", "the layer is no longer in the repository", head=head)
        except SokoError as exc:  # the upstream of a pull-through cache failed meanwhile
            return from_domain(exc, head=head)
        if isinstance(found, BlobFetch):
            return self._metered(await stream_fetch(self.registry, request, ref, found, meter=False), grant, request)
        blob = found
        headers = {
            "Docker-Content-Digest": blob.digest,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{blob.digest}"',
            "Cache-Control": "private, max-age=600",
        }
        try:
            response, sent = await blob_response(self.registry, request, blob, headers)
        except SokoError as exc:  # a customer key unusable now (403, naming the key), a blob gone from storage
            return from_domain(exc, head=head)
        return self._metered(response, grant, request, sent if response.status == 307 else None)

    def _metered(
        self, response: AnyResponse, grant: LayerGrant, request: Request, redirected: int | None = None
    ) -> AnyResponse:
        """``response``, metered by the server once it is over (a body: a GET's 200 or 206), or now when it sends the
        client to the object store for ``redirected`` bytes (storage_redirect: they leave storage unseen)."""
        context = RequestContext(
            source_ip=split_address(request.client)[0] if request.client else "127.0.0.1", endpoint=grant.endpoint
        )
        record = self.registry.metering.record_transfer
        if redirected is not None:
            record(context, grant.account, grant.repository, redirected, "blob_get")
        elif isinstance(response, (FileResponse, StreamResponse)):

            def done(sent: int) -> None:
                record(context, grant.account, grant.repository, sent, "blob_get")

            response.done = done
        return response

    def _open(self, ref: RepoRef, digest: str) -> BlobContent | BlobFetch:
        """The stored layer; else, in a pull-through cache's repository, the fetch GetDownloadUrlForLayer started
        (followed, or started again): the URL is the authorization, given to a caller allowed to import."""
        try:
            return self.registry.blobs.open(ref, digest)
        except (BlobUnknown, RepositoryNotFound):
            cache = self.pull_through
            rule = cache.rule_for(ref) if cache is not None else None
            if cache is None or rule is None or not cache.references(ref, digest):
                raise
            return cache.blob(ref, rule, digest, _allowed)


def _allowed(_action: str) -> None:
    return None
