"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: zero-copy reads with Range support."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from soko.errors import BlobUnknown, RangeNotSatisfiable, RepositoryNotFound, Unsupported
from soko.http.messages import AnyResponse, FileResponse, Request, Response, StreamResponse
from soko.http.threads import offload
from soko.oci.base import OciContext, context_of
from soko.oci.errors import API_VERSION_HEADER, from_domain
from soko.pullthrough.cache import BlobFetch
from soko.registry import Registry
from soko.registry.models import BlobContent, RepoRef
from soko.storage.plain_cache import Fill

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
READ_PIECE = 1 << 20


def offset(digits: str) -> int:
    """A byte offset from a header; past 19 digits it is past any size (and int() refuses past 4,300 digits)."""
    return int(digits) if len(digits) <= 19 else 1 << 63


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range → (start, end inclusive); None for a Range header we ignore (multi-range, other units)."""
    match = _RANGE.fullmatch(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = offset(last)
        if length == 0:
            raise RangeNotSatisfiable("an empty suffix range selects nothing", current_size=size)
        return max(size - length, 0), size - 1
    start = offset(first)
    end = min(offset(last), size - 1) if last else size - 1
    if start >= size or (last and offset(last) < start):
        raise RangeNotSatisfiable(f"range {header} lies outside the blob's {size} bytes", current_size=size)
    return start, end


async def get_blob(ctx: OciContext, request: Request, name: str, digest: str) -> AnyResponse:
    ref = ctx.repo(request, name)
    head = request.method == "HEAD"
    if head:
        await ctx.authorize(request, ref, "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", any_of=True)
    else:
        await ctx.authorize(request, ref, "ecr:GetDownloadUrlForLayer")
    hot = ctx.registry.blobs.hot(ref, digest) if not head else None  # (no thread, no database: as a manifest GET)
    try:
        blob = hot[0] if hot is not None else await offload(ctx.registry.blobs.open, ref, digest)
        if ctx.pull_through is not None and ctx.pull_through.unsettled(ref):
            # a fetch of this process just stored a blob here and is storing the images it completes
            await offload(ctx.pull_through.wait_settled, ref)
    except (BlobUnknown, RepositoryNotFound):
        cache = ctx.pull_through
        if cache is None:
            raise
        known, rule = cache.rule_cached(ref)
        if not known:
            rule = await offload(cache.rule_for, ref)
        if rule is None:
            raise
        found = await offload(cache.blob, ref, rule, digest, ctx.authorizer_for(request, ref))
        if isinstance(found, BlobFetch):
            return await stream_fetch(ctx.registry, request, ref, found)
        blob = found
    headers = {
        **API_VERSION_HEADER,
        "Docker-Content-Digest": blob.digest,
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{blob.digest}"',
        "Cache-Control": "max-age=31536000",
    }
    data = ctx.data_urls
    elsewhere = None
    if data is not None and data.enabled and request.method == "GET" and blob.size >= data.min_bytes:

        def elsewhere() -> str | None:  # the data listener's presigned URL, for a blob in the plaintext cache
            endpoint = context_of(request).endpoint
            return data.url(request.scheme, request.host, ref.account_id, ref.name, blob.digest, endpoint)

    response, sent = await blob_response(ctx.registry, request, blob, headers, elsewhere, hot[1] if hot else None)
    if sent is not None:  # (a 307 to the data listener: metered there, as each download of its URL)
        operation = f"blob_{request.method.lower()}"
        ctx.registry.metering.record_transfer(context_of(request), ref.account_id, ref.name, sent, operation)
    return response


async def stream_fetch(
    registry: Registry, request: Request, ref: RepoRef, fetch: BlobFetch, *, meter: bool = True
) -> AnyResponse:
    """A blob coming from a pull-through cache's upstream: sent while it is stored. A Range is answered as for a
    stored blob (206 and that range, 416 outside it); the range's last bytes go only once the whole blob is
    verified, as a whole blob's last piece does. HEAD only needs its length."""
    headers = {
        **API_VERSION_HEADER,
        "Docker-Content-Digest": fetch.digest,
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{fetch.digest}"',
    }
    byte_range = None
    range_header = request.headers.get("range")
    if range_header:
        try:
            byte_range = parse_range(range_header, fetch.size)
        except RangeNotSatisfiable as exc:
            await offload(fetch.close)
            return from_domain(exc, {"Content-Range": f"bytes */{fetch.size}"}, request.method == "HEAD")
    if request.method == "HEAD":
        await offload(fetch.close)
        return Response(200, {**headers, "Content-Length": str(fetch.size)})
    start, end = byte_range if byte_range else (0, fetch.size - 1)
    length = max(end - start + 1, 0)
    if meter:  # (not a presigned layer URL's request, which has no request context: as for a stored layer)
        registry.metering.record_transfer(context_of(request), ref.account_id, ref.name, length, "blob_get")
    if byte_range is None:
        return StreamResponse(200, {**headers, "Content-Length": str(fetch.size)}, _pieces(fetch))
    headers = {**headers, "Content-Length": str(length), "Content-Range": f"bytes {start}-{end}/{fetch.size}"}
    return StreamResponse(206, headers, _range_of(_pieces(fetch), start, end))


async def _range_of(pieces: AsyncIterator[bytes], start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes ``start``..``end`` (inclusive) of the pieces; the last part is held until the pieces end (the blob
    verified), so a range is never completed with unverified bytes."""
    offset = 0
    held: bytes | None = None
    async for piece in pieces:
        part = piece[max(start - offset, 0) : max(end + 1 - offset, 0)]
        offset += len(piece)
        if part:
            if held is not None:
                yield held
            held = part
    if held is not None:
        yield held


async def _pieces(fetch: BlobFetch) -> AsyncIterator[bytes]:
    """The fetch's pieces, the next one asked for on the thread pool while the server sends the current one."""
    loop = asyncio.get_running_loop()
    ahead: asyncio.Future | None = loop.run_in_executor(None, next, fetch.pieces, None)
    try:
        while ahead is not None:
            piece = await ahead
            ahead = None
            if piece is None:
                return
            ahead = loop.run_in_executor(None, next, fetch.pieces, None)
            yield piece
    finally:
        if ahead is not None:  # a generator cannot be closed while it runs: let the read end first
            await asyncio.gather(ahead, return_exceptions=True)
        await loop.run_in_executor(None, fetch.close)


async def blob_response(
    registry: Registry,
    request: Request,
    blob: BlobContent,
    headers: dict[str, str],
    data_listener: Callable[[], str | None] | None = None,
    cached: str | None = None,
) -> tuple[AnyResponse, int | None]:
    """A GET or HEAD of a blob — whole, one Range, or a redirect when the driver offers one or when
    ``data_listener`` gives the URL on Soko's sendfile listener of a blob in the plaintext cache — and the body bytes
    it will send (None: nothing to meter here: the request was refused, or redirected to the data listener, where
    each download of the URL is metered). The content is opened before the status goes out, so a blob gone
    meanwhile is a clean 404. ``cached``: the blob's file in the plaintext cache, found already (``Blobs.hot``)."""
    byte_range = None
    range_header = request.headers.get("range")
    if range_header:
        try:
            byte_range = parse_range(range_header, blob.size)
        except RangeNotSatisfiable as exc:
            return from_domain(exc, {"Content-Range": f"bytes */{blob.size}"}, request.method == "HEAD"), None
    if request.method == "HEAD":
        return Response(200, {**headers, "Content-Length": str(blob.size)}), 0
    start, end = byte_range if byte_range else (0, blob.size - 1)
    length = max(end - start + 1, 0)
    if blob.redirect_url:
        # The client fetches the bytes from the object store (repeating its Range there): they still leave the
        # registry's storage, so they are metered as this request's transfer.
        return _redirect(headers, blob.redirect_url), length
    # The decrypted blob in the plaintext cache (memory): sent by the kernel from the data listener (sendfile), or by
    # granian like a local file. A customer key's blob is checked (KMS Decrypt) first, as every pull of it, where its
    # bytes are sent: on the data listener for a redirect (which the /v2/ GET hands out without asking KMS: one
    # Decrypt per download, not two), here otherwise. The row was checked by the caller, so a deleted blob is not
    # served (nor redirected to) whatever is cached.
    location = data_listener() if data_listener is not None else None
    reader = None
    if cached is None:
        cached, reader = await offload(_cached_or_reader, registry, blob, start, location is not None)
    if cached is not None and location is not None:  # (the client repeats its Range there)
        return _redirect(headers, location), None
    headers = {**headers, "Content-Length": str(length)}
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    status = 206 if byte_range else 200
    if cached is not None:
        return FileResponse(status, headers, cached, start, length), length
    assert reader is not None
    local = registry.blobs.local_path(blob)
    if local is not None:
        # A local file: granian sends it from its own threads (no Python per piece: faster than the Python stream and
        # a third less CPU per GB; docs/performance.md). Opened above all the same, so a missing blob is our 404; a
        # deletion between that open and granian's (GC of a blob unreferenced for its grace period, a window of
        # microseconds) would get granian's bare 404 — never a 200 with a cut body.
        reader.close()
        return FileResponse(status, headers, local, start, length), length
    # A whole blob decrypted for this pull is kept (written and hashed beside the stream, installed once complete
    # and verified) so the next pulls on this node are sent from memory.
    fill = await offload(registry.blobs.fill, blob) if byte_range is None else None
    if fill is None:
        source = reader if hasattr(reader, "readinto") else None  # (every driver's reader has it)
        return StreamResponse(status, headers, _read_ahead(reader, length), reader.close, source), length

    def close() -> None:
        reader.close()
        fill.abort()  # (nothing once committed)

    space = blob.keyspace.name if blob.keyspace else None
    body = _read_ahead(reader, length, fill, space, blob.digest)
    filling = _Filling(reader, fill, length, space, blob.digest) if hasattr(reader, "readinto") else None
    return StreamResponse(status, headers, body, close, filling), length


def _redirect(headers: dict[str, str], location: str) -> Response:
    """A 307 to a presigned URL, which expires: the redirect itself must not be cached like the content is."""
    return Response(307, {**headers, "Location": location, "Cache-Control": "no-store", "Content-Length": "0"})


def _cached_or_reader(
    registry: Registry, blob: BlobContent, start: int, redirect: bool = False
) -> tuple[str | None, BinaryIO | None]:
    """(the blob's file in the plaintext cache, None), or (None, its reader from ``start``): one trip to the thread
    pool for either. ``redirect``: a customer key's blob is looked up in the cache without asking KMS, for a
    redirect to where it is sent from, which asks (the service key's are checked here as before: no KMS call, and
    the check lets the blob become hot)."""
    if redirect and blob.keyspace is not None:
        entry = registry.blobs.cache_entry(blob)
        if entry is not None:
            return entry, None
    cached, storage = registry.blobs.cached(blob)
    if cached is not None:
        return cached, None
    return None, registry.blobs.reader(blob, start, storage)


class _Filling:
    """A reader whose pieces also go into a plaintext cache fill (written and hashed in turn), installed before the
    last piece is handed out, as ``_read_ahead`` does: what the server's copy thread reads (soko.http.piped)."""

    def __init__(self, reader: BinaryIO, fill: Fill, length: int, space: str | None, digest: str) -> None:
        self._readinto = reader.readinto  # type: ignore[attr-defined]
        self._fill = fill
        self._left = length
        self._commit = (space, digest, length)

    def readinto(self, view: memoryview) -> int:
        n = self._readinto(view)
        if n:
            piece = (view[:n],)
            self._fill.write(piece)  # (False: the fill was given up, and the pull goes on without it)
            self._fill.digest(piece)
            self._left -= n
            if self._left <= 0:  # installed before the last piece goes: a pull that ends finds it there
                self._fill.commit(*self._commit)
        return n


class _Turns:
    """Pieces read into two reused buffers in turn (``readinto``: a sealed reader decrypts straight into them), for
    a stream nothing else keeps pieces of: the server copies a piece when it is handed one (granian's
    ``send_bytes``), before it asks for the next, so a buffer is free again when its turn comes two pieces later.
    Saves allocating and filling a fresh 1 MiB piece each time."""

    def __init__(self, reader: BinaryIO) -> None:
        self._readinto = reader.readinto  # type: ignore[attr-defined]  # (every driver's reader has it)
        self._buffers = [bytearray(READ_PIECE), bytearray(READ_PIECE)]
        self._turn = 0

    def read(self, size: int) -> bytes:
        buffer = self._buffers[self._turn]
        self._turn ^= 1
        if size != len(buffer):  # (the last piece)
            buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            n = self._readinto(view[got:])
            if not n:
                break
            got += n
        return buffer if got == size else bytes(view[:got])  # type: ignore[return-value]  # (granian takes both)


async def _read_ahead(
    reader: BinaryIO, length: int, fill: Fill | None = None, space: str | None = None, digest: str = ""
) -> AsyncIterator[bytes]:
    """1 MiB pieces, the next one read on the thread pool while the server sends the current one (drivers without
    local files; 1 MiB buffers are reused by the allocator, larger ones cost fresh pages and are slower). With a
    ``fill``, each piece is also written and hashed into the plaintext cache (two more pool threads, in order)."""
    loop = asyncio.get_running_loop()
    remaining = length
    read = _Turns(reader).read if fill is None and hasattr(reader, "readinto") else reader.read
    ahead = loop.run_in_executor(None, read, min(READ_PIECE, remaining)) if remaining > 0 else None
    keeping: asyncio.Future | None = None
    try:
        while ahead is not None:
            data = await ahead
            ahead = None
            if not data:
                raise BlobUnknown(f"the blob's content ended {remaining} bytes early; run soko fsck")
            remaining -= len(data)
            if remaining > 0:
                ahead = loop.run_in_executor(None, read, min(READ_PIECE, remaining))
            if fill is not None:
                if keeping is not None:
                    await keeping
                pieces = (data,)
                keeping = asyncio.gather(
                    loop.run_in_executor(None, fill.write, pieces), loop.run_in_executor(None, fill.digest, pieces)
                )
                if remaining <= 0:  # installed before the last piece goes: a pull that ends finds it there
                    await keeping
                    keeping = None
                    await loop.run_in_executor(None, lambda: fill.commit(space, digest, length))
            yield data
    finally:
        if ahead is not None:
            await asyncio.gather(ahead, return_exceptions=True)  # the reader is closed after us: let the read end
        if keeping is not None:
            await asyncio.gather(keeping, return_exceptions=True)
        if fill is not None:
            fill.abort()  # (nothing once committed)


async def delete_blob(ctx: OciContext, request: Request, name: str, digest: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:BatchDeleteImage")
    if request.method != "DELETE":
        raise Unsupported(f"{request.method} is not supported on blobs")
    await offload(ctx.registry.blobs.unlink, ref, digest)
    return Response(202, {**API_VERSION_HEADER, "Content-Length": "0"})
