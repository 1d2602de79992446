"""/v2/<name>/blobs/uploads/…: start (plain, monolithic, mount), PATCH chunks, PUT to complete, status, cancel."""

from __future__ import annotations

import re
from functools import partial

from soko.errors import DigestInvalid, RangeNotSatisfiable, SokoError, UploadInvalid
from soko.http.messages import Request, Response
from soko.http.streaming import pump_body
from soko.http.threads import offload
from soko.names import validate_repository_name
from soko.oci.base import OciContext, location, principal_of, replicated_from, upload_range
from soko.oci.blobs import offset
from soko.oci.errors import API_VERSION_HEADER, from_domain
from soko.registry.models import RepoRef, UploadState

# The spec's form is "<start>-<end>"; Docker clients historically sent "bytes <start>-<end>/<total|*>" too.
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?")


def _upload_url(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def _session_headers(name: str, state: UploadState) -> dict[str, str]:
    return {
        **API_VERSION_HEADER,
        **location(_upload_url(name, state.id)),
        "Range": upload_range(state.size),
        "Docker-Upload-UUID": state.id,
        "Content-Length": "0",
    }


def _created(name: str, digest: str) -> Response:
    return Response(
        201,
        {
            **API_VERSION_HEADER,
            **location(f"/v2/{name}/blobs/{digest}"),
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


def _content_length(request: Request) -> int | None:
    if "content-length" not in request.headers:
        return None
    try:
        value = int(request.headers.get("content-length"))
    except ValueError:
        raise UploadInvalid("Content-Length must be a whole number of bytes") from None
    if value < 0:
        raise UploadInvalid("Content-Length must not be negative")
    return value


def _has_body(request: Request) -> bool:
    length = _content_length(request)
    return bool(length) or (length is None and request.headers.get("transfer-encoding", "").lower() == "chunked")


async def _write_chunk(
    ctx: OciContext, request: Request, ref: RepoRef, upload_id: str, start: int | None, declared: int | None = None
) -> UploadState:
    """Stream the body in as the session's next chunk. ``declared``: its length from Content-Range when there is
    no Content-Length. A chunk declared too big for the quota is refused (413) before its body is read, so a
    client that sent ``Expect: 100-continue`` never sends it."""
    expected = _content_length(request)
    length = expected if expected is not None else declared
    writer = await offload(ctx.registry.uploads.begin_chunk, ref, upload_id, start, length)
    try:
        await pump_body(request, writer, expected)
        return await offload(writer.finish)
    except BaseException:
        await offload(writer.abort)  # (ends the claim: a database write, so not on the loop)
        raise


async def start_upload(ctx: OciContext, request: Request, name: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:InitiateLayerUpload")
    query = request.query
    mount, source = query.get("mount"), query.get("from")
    if mount:
        await ctx.authorize(request, ref, "ecr:UploadLayerPart", "ecr:CompleteLayerUpload")
        if source:
            validate_repository_name(source)
            source_ref = RepoRef(ref.account_id, source)
            try:
                await ctx.authorize(request, source_ref, "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
                mounted = await offload(ctx.registry.blobs.mount, ref, mount, source_ref)
            except SokoError as exc:
                if isinstance(exc, DigestInvalid):
                    raise
                mounted = None  # no access to, or no such, source: fall back to a regular upload (spec)
            if mounted is not None:
                return _created(name, mounted.digest)
    digest = query.get("digest")
    if digest is not None:  # a monolithic upload too big for the quota: refused before the session exists
        await offload(ctx.registry.uploads.check_size, ref, 0, _content_length(request))
    replicated = replicated_from(request, UploadInvalid) is not None
    if replicated:  # another region's replication: a missing repository is created as replication does
        await ctx.authorize(request, ref, "ecr:ReplicateImage")
    state = await offload(partial(ctx.registry.uploads.start, replicated=replicated), ref, principal_of(request).arn)
    if digest is None:
        if _has_body(request):
            raise UploadInvalid("a POST with a body must name its digest (?digest=) for a monolithic upload")
        return Response(202, _session_headers(name, state))
    # Monolithic upload: the whole blob in the POST body.
    await ctx.authorize(request, ref, "ecr:UploadLayerPart", "ecr:CompleteLayerUpload")
    try:
        await _write_chunk(ctx, request, ref, state.id, 0)
        blob = await offload(ctx.registry.uploads.complete, ref, state.id, digest)
    except BaseException:
        await offload(_cancel_quietly, ctx, ref, state.id)
        raise
    return _created(name, blob.digest)


def _cancel_quietly(ctx: OciContext, ref: RepoRef, upload_id: str) -> None:
    try:
        ctx.registry.uploads.cancel(ref, upload_id)
    except SokoError:
        pass


def _range_refused(name: str, upload_id: str, exc: RangeNotSatisfiable) -> Response:
    return from_domain(
        exc,
        {
            **location(_upload_url(name, upload_id)),
            "Range": upload_range(exc.current_size),
            "Docker-Upload-UUID": upload_id,
        },
    )


async def _chunk_start(
    ctx: OciContext, request: Request, ref: RepoRef, upload_id: str
) -> tuple[int | None, int | None]:
    """The offset and length a chunk's ``Content-Range`` claims (None without one), checked against its body's
    length.

    PATCH and the final PUT both carry chunks and both honour it: a chunk that does not start at the session's
    current offset is refused with 416 and the current ``Range`` (by ``begin_chunk``), never appended."""
    content_range = request.headers.get("content-range")
    if content_range is None:
        return None, None
    match = _CONTENT_RANGE.fullmatch(content_range.strip())
    if not match:
        raise UploadInvalid(f"malformed Content-Range '{content_range[:100]}'; expected <start>-<end>")
    start, end = offset(match.group(1)), offset(match.group(2))
    length = _content_length(request)
    if end < start or (length is not None and end - start + 1 != length):
        state = await offload(ctx.registry.uploads.status, ref, upload_id)
        raise RangeNotSatisfiable(
            f"Content-Range {content_range} does not match the {length}-byte body", current_size=state.size
        )
    return start, end - start + 1


async def patch_upload(ctx: OciContext, request: Request, name: str, upload_id: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:UploadLayerPart")
    try:
        start, declared = await _chunk_start(ctx, request, ref, upload_id)
        state = await _write_chunk(ctx, request, ref, upload_id, start, declared)
    except RangeNotSatisfiable as exc:
        return _range_refused(name, upload_id, exc)
    return Response(202, _session_headers(name, state))


async def put_upload(ctx: OciContext, request: Request, name: str, upload_id: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:CompleteLayerUpload")
    digest = request.query.get("digest")
    if not digest:
        raise DigestInvalid("completing an upload needs its digest: PUT …?digest=<algorithm>:<hex>")
    try:
        if _has_body(request):
            await ctx.authorize(request, ref, "ecr:UploadLayerPart")
            start, declared = await _chunk_start(ctx, request, ref, upload_id)
            await _write_chunk(ctx, request, ref, upload_id, start, declared)
        blob = await offload(ctx.registry.uploads.complete, ref, upload_id, digest)
    except RangeNotSatisfiable as exc:
        return _range_refused(name, upload_id, exc)
    return _created(name, blob.digest)


async def upload_status(ctx: OciContext, request: Request, name: str, upload_id: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:UploadLayerPart")
    state = await offload(ctx.registry.uploads.status, ref, upload_id)
    return Response(204, _session_headers(name, state))


async def cancel_upload(ctx: OciContext, request: Request, name: str, upload_id: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:UploadLayerPart")
    await offload(ctx.registry.uploads.cancel, ref, upload_id)
    return Response(204, {**API_VERSION_HEADER, "Content-Length": "0"})
