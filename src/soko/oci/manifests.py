"""/v2/<name>/manifests/<reference>: GET/HEAD with Accept negotiation, PUT, DELETE."""

from __future__ import annotations

from aiohttp import web

from soko.errors import ManifestUnknown, TooLarge
from soko.http.context import CONTEXT_KEY
from soko.http.streaming import read_limited
from soko.oci.base import OciContext, location, offload
from soko.oci.errors import API_VERSION_HEADER
from soko.registry import media_types as mt


async def get_manifest(ctx: OciContext, request: web.Request, name: str, reference: str) -> web.StreamResponse:
    ref = ctx.repo(request, name)
    ctx.authorize(request, ref, "ecr:BatchGetImage")
    head = request.method == "HEAD"
    record = ctx.registry.manifests.get(ref, reference, record_pull=not head)
    accepted = mt.parse_accept_cached(request.headers.getall("Accept", []))
    if not mt.acceptable(record.media_type, accepted):
        raise ManifestUnknown(
            f"manifest '{reference}' in '{name}' is a {record.media_type}, which the request's Accept header "
            f"does not allow ({', '.join(accepted)[:300]})"
        )
    headers = _response_headers(record.digest, record.media_type, len(record.payload))
    sent, operation = (0, "manifest_head") if head else (len(record.payload), "manifest_get")
    ctx.registry.metering.record_transfer(request[CONTEXT_KEY], ref.account_id, ref.name, sent, operation)
    if head:
        return web.Response(status=200, headers=headers)
    return web.Response(status=200, body=record.payload, headers=headers)


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


async def put_manifest(ctx: OciContext, request: web.Request, name: str, reference: str) -> web.StreamResponse:
    ref = ctx.repo(request, name)
    ctx.authorize(request, ref, "ecr:PutImage")
    limit = ctx.settings.max_manifest_size
    payload = await read_limited(request, limit)
    if payload is None:
        raise TooLarge(f"manifest is larger than the {limit}-byte limit")
    result = await offload(ctx.registry.manifests.put, ref, reference, payload, request.headers.get("Content-Type"))
    headers = {
        **API_VERSION_HEADER,
        **location(f"/v2/{name}/manifests/{result.digest}"),
        "Docker-Content-Digest": result.digest,
        "Content-Length": "0",
    }
    if result.subject_digest:
        headers["OCI-Subject"] = result.subject_digest
    ctx.registry.metering.record_transfer(request[CONTEXT_KEY], ref.account_id, ref.name, 0, "manifest_put")
    return web.Response(status=201, headers=headers)


async def delete_manifest(ctx: OciContext, request: web.Request, name: str, reference: str) -> web.StreamResponse:
    ref = ctx.repo(request, name)
    ctx.authorize(request, ref, "ecr:BatchDeleteImage")
    await offload(ctx.registry.manifests.delete, ref, reference)
    return web.Response(status=202, headers={**API_VERSION_HEADER, "Content-Length": "0"})
