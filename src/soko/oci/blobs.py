"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: zero-copy reads with Range support."""

from __future__ import annotations

import re

from aiohttp import web

from soko.errors import RangeNotSatisfiable, Unsupported
from soko.http.context import CONTEXT_KEY
from soko.oci.base import OciContext, offload
from soko.oci.errors import API_VERSION_HEADER, from_domain

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range → (start, end inclusive); None for a Range header we ignore (multi-range, other units)."""
    match = _RANGE.fullmatch(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("an empty suffix range selects nothing", current_size=size)
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"range {header} lies outside the blob's {size} bytes", current_size=size)
    return start, end


async def get_blob(ctx: OciContext, request: web.Request, name: str, digest: str) -> web.StreamResponse:
    ref = ctx.repo(request, name)
    head = request.method == "HEAD"
    if head:
        ctx.authorize(request, ref, "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", any_of=True)
    else:
        ctx.authorize(request, ref, "ecr:GetDownloadUrlForLayer")
    blob = ctx.registry.blobs.open(ref, digest)
    headers = {
        **API_VERSION_HEADER,
        "Docker-Content-Digest": blob.digest,
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{blob.digest}"',
        "Cache-Control": "max-age=31536000",
    }
    range_header = request.headers.get("Range")
    byte_range = None
    if range_header:
        try:
            byte_range = parse_range(range_header, blob.size)
        except RangeNotSatisfiable as exc:
            return from_domain(exc, {"Content-Range": f"bytes */{blob.size}"}, head)
    sent = 0 if head or blob.redirect_url else (byte_range[1] - byte_range[0] + 1 if byte_range else blob.size)
    ctx.registry.metering.record_transfer(
        request[CONTEXT_KEY], ref.account_id, ref.name, sent, f"blob_{request.method.lower()}"
    )
    if head:
        headers["Content-Length"] = str(blob.size)
        return web.Response(status=200, headers=headers)
    if blob.redirect_url:
        return web.Response(status=307, headers={**headers, "Location": blob.redirect_url})
    if blob.local_path:
        # aiohttp's FileResponse serves the (already validated) range with sendfile(2) on the asyncio loop.
        return web.FileResponse(blob.local_path, headers=headers)
    return await _stream(ctx, request, blob.storage_path, blob.size, byte_range, headers)


async def _stream(
    ctx: OciContext,
    request: web.Request,
    path: str,
    size: int,
    byte_range: tuple[int, int] | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Drivers without a local file: stream from the driver's reader in 1 MiB pieces."""
    start, end = byte_range if byte_range else (0, size - 1)
    length = max(end - start + 1, 0)
    headers["Content-Length"] = str(length)
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    await response.prepare(request)
    reader = await offload(ctx.registry.ctx.storage.reader, path, start)
    try:
        remaining = length
        while remaining > 0:
            data = await offload(reader.read, min(1 << 20, remaining))
            if not data:
                break
            remaining -= len(data)
            await response.write(data)
    finally:
        reader.close()
    await response.write_eof()
    return response


async def delete_blob(ctx: OciContext, request: web.Request, name: str, digest: str) -> web.StreamResponse:
    ref = ctx.repo(request, name)
    ctx.authorize(request, ref, "ecr:BatchDeleteImage")
    if request.method != "DELETE":
        raise Unsupported(f"{request.method} is not supported on blobs")
    await offload(ctx.registry.blobs.unlink, ref, digest)
    return web.Response(status=202, headers={**API_VERSION_HEADER, "Content-Length": "0"})
