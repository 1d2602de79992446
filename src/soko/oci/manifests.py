"""/v2/<name>/manifests/<reference>: GET/HEAD with Accept negotiation, PUT, DELETE."""

from __future__ import annotations

from functools import partial

from soko.errors import DigestInvalid, ManifestInvalid, ManifestUnknown, TagInvalid
from soko.http.bodies import BodyRefused, whole_body
from soko.http.messages import Request, Response
from soko.http.threads import offload
from soko.oci.base import OciContext, context_of, location, principal_of, replicated_from
from soko.oci.errors import API_VERSION_HEADER, error_response
from soko.pullthrough.rules import Rule
from soko.registry import media_types as mt
from soko.registry.models import RepoRef
from soko.signing.config import sign_payload_check


async def get_manifest(ctx: OciContext, request: Request, name: str, reference: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:BatchGetImage")
    head = request.method == "HEAD"
    cache = ctx.pull_through
    if cache is not None:
        known, rule = cache.rule_cached(ref)
        if not known:
            rule = await offload(cache.rule_for, ref)
        if rule is not None:
            return await _pull_through(ctx, request, ref, rule, reference)
    try:
        # From the in-process cache on the event loop (about a microsecond); from the database on a thread.
        record = ctx.registry.manifests.cached(ref, reference, record_pull=not head)
        if record is None:
            record = await offload(partial(ctx.registry.manifests.get, ref, reference, record_pull=not head))
    except (TagInvalid, DigestInvalid) as exc:
        # The spec's endpoint table allows only 404 on manifest reads: a reference that cannot name a manifest
        # names none. (PUT and DELETE keep 400 TAG_INVALID / DIGEST_INVALID: there the client must fix it.)
        raise ManifestUnknown(f"manifest '{reference[:200]}' is not in '{name}': {exc.message}") from None
    ctx.registry.manifests.pullable(ref, record, reference)  # HEAD too: an archived image is not there to pull
    return _answer(ctx, request, ref, reference, record.digest, record.media_type, record.payload)


async def _pull_through(ctx: OciContext, request: Request, ref: RepoRef, rule: Rule, reference: str) -> Response:
    """A manifest of a repository under a pull-through cache rule: from the cache, else (or when the tag is due for
    a check) from the upstream (``soko.pullthrough``)."""
    assert ctx.pull_through is not None
    head = request.method == "HEAD"
    try:
        found = ctx.pull_through.cached_manifest(ref, reference, record_pull=not head)
        if found is None:
            found = await offload(
                partial(
                    ctx.pull_through.manifest,
                    ref,
                    rule,
                    reference,
                    ctx.authorizer_for(request, ref),
                    record_pull=not head,
                )
            )
    except (TagInvalid, DigestInvalid) as exc:
        raise ManifestUnknown(f"manifest '{reference[:200]}' is not in '{ref.name}': {exc.message}") from None
    return _answer(ctx, request, ref, reference, found.digest, found.media_type, found.payload)


def _answer(
    ctx: OciContext, request: Request, ref: RepoRef, reference: str, digest: str, media_type: str, payload: bytes
) -> Response:
    head = request.method == "HEAD"
    accepted = mt.parse_accept_cached(request.getall("accept"))
    if not mt.acceptable(media_type, accepted):
        raise ManifestUnknown(
            f"manifest '{reference}' in '{ref.name}' is a {media_type}, which the request's Accept header "
            f"does not allow ({', '.join(accepted)[:300]})"
        )
    headers = _response_headers(digest, media_type, len(payload))
    sent, operation = (0, "manifest_head") if head else (len(payload), "manifest_get")
    ctx.registry.metering.record_transfer(context_of(request), ref.account_id, ref.name, sent, operation)
    if head:
        return Response(200, headers)
    return Response(200, headers, payload)


# BodyRefused.reason → (status, OCI error code): the spec's 413 for a manifest over the size limit; a body that
# never arrived whole is not a manifest (400), or came too slowly (408, as HTTP says); a full budget is 503.
_BODY_ERRORS = {
    "too_large": (413, "SIZE_INVALID"),
    "interrupted": (400, "MANIFEST_INVALID"),
    "slow": (408, "MANIFEST_INVALID"),
    "busy": (503, "UNAVAILABLE"),
}
_HEADERS: dict[tuple[str, str, int], dict[str, str]] = {}


def _response_headers(digest: str, media_type: str, size: int) -> dict[str, str]:
    """A manifest's response headers, built once per manifest (they depend only on its content)."""
    key = (digest, media_type, size)
    headers = _HEADERS.get(key)
    if headers is None:
        headers = {
            **API_VERSION_HEADER,
            "Content-Type": media_type,
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Content-Length": str(size),
        }
        if len(_HEADERS) > 10_000:
            _HEADERS.clear()
        _HEADERS[key] = headers
    return headers


async def put_manifest(ctx: OciContext, request: Request, name: str, reference: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:PutImage")
    source = replicated_from(request, ManifestInvalid)
    if source is not None:  # another region's replication: a copy, not a push (no chaining)
        await ctx.authorize(request, ref, "ecr:ReplicateImage")
    limit = ctx.settings.max_manifest_size
    try:
        # Held whole under the process's body budget, with its minimum rate: what POST / does with its documents.
        async with whole_body(request, limit, ctx.bodies) as payload:
            result = await offload(
                partial(ctx.registry.manifests.put, replicated_from=source,
                        may_sign=sign_payload_check(ctx.authorizer, principal_of(request), context_of(request))),
                ref,
                reference,
                payload,
                request.headers.get("content-type"),
            )
    except BodyRefused as exc:  # (the rest of the body stays unread: the answer says Connection: close)
        status, code = _BODY_ERRORS[exc.reason]
        message = f"manifest is larger than the {limit}-byte limit" if exc.reason == "too_large" else exc.message
        return error_response(status, code, message, headers={"Retry-After": "1"} if exc.reason == "busy" else None)
    headers = {
        **API_VERSION_HEADER,
        **location(f"/v2/{name}/manifests/{result.digest}"),
        "Docker-Content-Digest": result.digest,
        "Content-Length": "0",
    }
    if result.subject_digest:
        headers["OCI-Subject"] = result.subject_digest
    ctx.registry.metering.record_transfer(context_of(request), ref.account_id, ref.name, 0, "manifest_put")
    return Response(201, headers)


async def delete_manifest(ctx: OciContext, request: Request, name: str, reference: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:BatchDeleteImage")
    await offload(ctx.registry.manifests.delete, ref, reference)
    return Response(202, {**API_VERSION_HEADER, "Content-Length": "0"})
