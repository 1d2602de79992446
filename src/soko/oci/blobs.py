"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: zero-copy reads with Range support."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from soko.errors import RangeNotSatisfiable, Unsupported
from soko.http.messages import AnyResponse, Request, Response, StreamResponse
from soko.http.threads import offload
from soko.oci.base import OciContext
from soko.oci.errors import API_VERSION_HEADER, from_domain
from soko.registry import Registry
from soko.registry.models import BlobContent

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
PIECE = 1 << 20


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


async def get_blob(ctx: OciContext, request: Request, name: str, digest: str) -> AnyResponse:
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
    range_header = request.headers.get("range")
    byte_range = None
    if range_header:
        try:
            byte_range = parse_range(range_header, blob.size)
        except RangeNotSatisfiable as exc:
            return from_domain(exc, {"Content-Range": f"bytes */{blob.size}"}, head)
    sent = 0 if head or blob.redirect_url else (byte_range[1] - byte_range[0] + 1 if byte_range else blob.size)
    ctx.registry.metering.record_transfer(
        request.context, ref.account_id, ref.name, sent, f"blob_{request.method.lower()}"
    )
    if head:
        return Response(200, {**headers, "Content-Length": str(blob.size)})
    return send_blob(ctx.registry, blob, byte_range, headers)


def send_blob(
    registry: Registry, blob: BlobContent, byte_range: tuple[int, int] | None, headers: dict[str, str]
) -> AnyResponse:
    """The blob's bytes (or a range of them): a redirect when the driver offers one, else streamed from the driver."""
    if blob.redirect_url:
        return Response(307, {**headers, "Location": blob.redirect_url})
    start, end = byte_range if byte_range else (0, blob.size - 1)
    length = max(end - start + 1, 0)
    headers = {**headers, "Content-Length": str(length)}
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    return StreamResponse(206 if byte_range else 200, headers, _read_pieces(registry, blob.storage_path, start, length))


async def _read_pieces(registry: Registry, path: str, start: int, length: int) -> AsyncIterator[bytes]:
    """1 MiB pieces, the next one read on the thread pool while the server sends the current one.

    Measured against granian's own file response on this machine: 3.5-4 GB/s warm vs 2.6-3.1 (1 MiB buffers are
    reused by the allocator; larger ones cost fresh pages and are slower).
    """
    loop = asyncio.get_running_loop()
    reader = await offload(registry.ctx.storage.reader, path, start)
    ahead: asyncio.Future | None = None
    try:
        remaining = length
        ahead = loop.run_in_executor(None, reader.read, min(PIECE, remaining)) if remaining > 0 else None
        while ahead is not None:
            data = await ahead
            ahead = None
            if not data:
                break
            remaining -= len(data)
            if remaining > 0:
                ahead = loop.run_in_executor(None, reader.read, min(PIECE, remaining))
            yield data
    finally:
        if ahead is not None:
            await asyncio.gather(ahead, return_exceptions=True)  # never close the reader under a running read
        reader.close()


async def delete_blob(ctx: OciContext, request: Request, name: str, digest: str) -> Response:
    ref = ctx.repo(request, name)
    ctx.authorize(request, ref, "ecr:BatchDeleteImage")
    if request.method != "DELETE":
        raise Unsupported(f"{request.method} is not supported on blobs")
    await offload(ctx.registry.blobs.unlink, ref, digest)
    return Response(202, {**API_VERSION_HEADER, "Content-Length": "0"})
