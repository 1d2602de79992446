"""S3-compatible object-store driver (AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage): scale-out blob storage.

Every node talks to the same bucket, so no state may live on a node: an upload resumed on another node must find
what the first one wrote. S3 has no append, so a file written through ``writer`` (only in-flight upload data is)
is stored as *parts*, one object per piece at ``paths.part_path`` (``<path>~parts/<start offset, 16 hex digits>``):

* a writer stores ``PART_SIZE`` bytes as one part whenever it buffers more than ``PART_SIZE + MIN_PART_SIZE``;
  ``close``/``commit`` store the rest (up to 13 MiB) as one part. Up to ``PARTS_IN_FLIGHT`` parts of a writer are
  stored at once, in the background, while the body keeps coming (memory stays bounded: the buffer plus those
  parts); ``close``/``commit`` return only once every part is stored, and a writer that fails waits for all its
  parts in flight before it raises, so nothing lands after it. A part stored out of order by a failed writer
  starts past the recorded offset, which the next writer deletes. A later writer resuming at that offset takes the
  last part back into its buffer only when it is shorter than ``MIN_PART_SIZE``, so every part but the last holds
  at least 5 MiB — which is what S3's multipart copy needs — and a chunk of 5 MiB or more (every ECR layer part
  but the last) is appended as parts without reading anything back;
* resuming at an offset deletes the parts that start at or after it and truncates one that straddles it (a chunk
  that failed half-way), as the filesystem driver truncates its file;
* ``move`` of a parted file (upload completion) assembles it into one ordinary object at the destination with a
  server-side multipart copy (no bytes through Soko), then deletes the parts. Every other file is one object,
  written atomically by a single PUT.

Deletion of a "directory" deletes every key under it. ``walk`` pages through ListObjectsV2 without a HEAD per key.
The upload claim in the database (registry/uploads.py) guarantees one writer per upload at a time, across nodes.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from soko.storage import paths
from soko.storage.base import (
    Capabilities,
    FileInfo,
    FileWriter,
    InvalidOffset,
    PathNotFound,
    StorageDriver,
    StorageError,
    StorageUnreachable,
    check_path,
)

PART_SIZE = 8 << 20  # what a writer stores at a time while more keeps coming
MIN_PART_SIZE = 5 << 20  # S3's minimum for every multipart part but the last
PARTS_IN_FLIGHT = 2  # per writer: a PUT overlaps reading the body without holding more than 2 parts in memory
PART_THREADS = 16  # per driver, shared by its writers
COPY_PART_SIZE = 1 << 30  # a plain object larger than S3's 5 GB single-copy limit is copied in 1 GiB pieces
SINGLE_COPY_LIMIT = 5 * 10**9
_PARTS = paths.PARTS
_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


_URL_REUSE = 60.0  # seconds a presigned URL is handed out again (see S3Driver.redirect_url)
_URL_CACHE_SIZE = 4096

@dataclass(frozen=True)
class S3Location:
    """Where and how to reach the bucket: ``s3://bucket/prefix?endpoint_url=…&region=…&addressing_style=path``.

    Credentials come from the standard AWS chain (environment, shared config/credentials files, ``profile=``),
    never from the URL, so they do not end up in logs or process listings."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    profile: str | None = None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an S3 storage URL: {url!r} (expected s3://bucket/prefix?endpoint_url=…)")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint_url", "region", "addressing_style", "profile"}
        if unknown:
            raise ValueError(
                f"unknown S3 storage URL parameter(s) {', '.join(sorted(unknown))}: use endpoint_url, region, "
                "addressing_style (path|virtual|auto) or profile; credentials come from the AWS environment"
            )
        style = query.get("addressing_style", "auto")
        if style not in ("auto", "path", "virtual"):
            raise ValueError(f"addressing_style must be path, virtual or auto, not {style!r}")
        prefix = parts.path.strip("/")
        if any(segment in ("", ".", "..") for segment in prefix.split("/")) and prefix:
            # A prefix is a key prefix, not a path: "a/../b" or "a//b" would name keys no other tool resolves the same
            # way, so two deployments could share (or miss) each other's objects.
            raise ValueError(f"S3 storage URL prefix {prefix!r} has an empty, '.' or '..' segment: write it plainly")
        return cls(
            bucket=parts.netloc,
            prefix=prefix,
            endpoint_url=query.get("endpoint_url"),
            region=query.get("region"),
            addressing_style=style,
            profile=query.get("profile"),
        )

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def _unreachable_on_failure(method: Callable) -> Callable:
    """The store failing (after botocore's retries) or out of reach is StorageUnreachable — a retryable 503 for
    clients — never a bare botocore error that would surface as a 500."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnreachable(f"the S3 store failed: {exc}") from exc

    return run


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class _PartedReader(io.RawIOBase):
    """The parts of a parted file, read one after another from ``offset``."""

    def __init__(self, driver: S3Driver, key: str, parts: list[tuple[int, int]], offset: int) -> None:
        self._driver = driver
        self._key = key
        self._parts = [(start, size) for start, size in parts if start + size > offset]
        self._offset = offset
        self._body: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._body is None:
                if not self._parts:
                    return 0
                start, _ = self._parts.pop(0)
                skip = max(0, self._offset - start)
                self._body = self._driver._get(self._driver._part_key(self._key, start), skip)
            data = self._body.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self._body.close()
            self._body = None

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()


class _BodyReader(io.RawIOBase):
    """A GetObject body as a file object (reads and closes through botocore's StreamingBody)."""

    def __init__(self, body) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class _PartWriter(FileWriter):
    @_unreachable_on_failure
    def __init__(self, driver: S3Driver, key: str, offset: int) -> None:
        self._driver = driver
        self._key = key
        self._buffer = bytearray()
        self._closed = False
        self._pending: deque[Future] = deque()  # parts being stored, oldest first
        self._failed: BaseException | None = None
        parts = driver._parts(key)
        held = parts[-1][0] + parts[-1][1] if parts else driver._plain_size(key)
        if held is None:
            held = 0
            if offset:
                raise InvalidOffset(f"cannot resume {key} at {offset}: no such file")
        if held < offset:
            raise InvalidOffset(f"cannot resume {key} at {offset}: it holds only {held} bytes")
        if not parts and held:  # an ordinary object (e.g. put_content) becomes the first part
            driver._copy(key, driver._part_key(key, 0))
            driver._delete_keys([key])
            parts = [(0, held)]
        # Drop what lies at or past the offset; a straddling or short last part comes back into the buffer.
        stale = [start for start, _ in parts if start >= offset]
        kept = [(start, size) for start, size in parts if start < offset]
        self._start = offset
        if kept:
            start, size = kept[-1]
            if start + size > offset or size < MIN_PART_SIZE:
                with driver._get(driver._part_key(key, start), 0) as body:
                    self._buffer += body.read(offset - start)
                self._start = start
        driver._delete_keys([driver._part_key(key, start) for start in stale])
        if not parts and not offset:
            driver._delete_keys([key])
        self._size = offset

    @_unreachable_on_failure
    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        written = len(view)
        while len(view):
            room = PART_SIZE + MIN_PART_SIZE - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= PART_SIZE + MIN_PART_SIZE:
                self._store_buffer(PART_SIZE)  # what stays behind is ≥ MIN_PART_SIZE: never a short part
        self._size += written
        return written

    def _store_buffer(self, length: int | None = None) -> None:
        length = len(self._buffer) if length is None else length
        self._wait(PARTS_IN_FLIGHT - 1)
        key = self._driver._part_key(self._key, self._start)
        self._pending.append(self._driver._pool().submit(self._driver._put, key, bytes(self._buffer[:length])))
        self._start += length
        del self._buffer[:length]

    def _wait(self, in_flight: int = 0) -> None:
        """Wait until at most ``in_flight`` parts are being stored. A part that failed fails every later call: after
        waiting for all the others, so that no PUT of this writer lands once it has given up."""
        if self._failed is not None:
            raise StorageUnreachable(f"an earlier part of {self._key} was not stored: {self._failed}")
        try:
            while len(self._pending) > in_flight:
                self._pending.popleft().result()
        except BaseException as exc:
            self._failed = exc
            wait(self._pending)
            self._pending.clear()
            raise

    @property
    def size(self) -> int:
        return self._size

    def commit(self) -> None:
        self.close()

    @_unreachable_on_failure
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._buffer or self._size == 0:  # an empty file is one empty part, so it exists
            self._store_buffer()
        self._wait()  # durable: every part is stored

    @_unreachable_on_failure
    def cancel(self) -> None:
        self._closed = True
        self._buffer.clear()
        wait(self._pending)  # none may land after the delete
        self._pending.clear()
        self._driver._delete_prefix(self._key + _PARTS)


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(self, location: S3Location, client=None, *, redirect_expiry: float | None = None,
                 list_page_size: int | None = None) -> None:
        self.location = location
        self.redirect_expiry = redirect_expiry  # None: blobs stream through Soko
        # None: the store's own ListObjectsV2 page (1,000 keys on S3). Tests list past a page with a small one.
        self.list_page_size = list_page_size
        self._urls: dict[tuple[str, str], tuple[float, str]] = {}  # (method, path) → (when presigned, URL)
        self._prefix = location.prefix + "/" if location.prefix else ""
        if client is None:
            session = botocore.session.Session(profile=location.profile)
            client = session.create_client(
                "s3",
                endpoint_url=location.endpoint_url,
                region_name=location.region or session.get_config_variable("region") or "us-east-1",
                config=Config(
                    signature_version="s3v4",  # also for presigned URLs (botocore would presign with SigV2)
                    s3={"addressing_style": location.addressing_style},
                    retries={"mode": "standard", "max_attempts": 5},
                    max_pool_connections=64,
                    # S3-compatible servers differ in their support for the newest checksum headers.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        self.client = client
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        """Threads that store writers' parts (botocore clients are thread-safe), made on first use."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(PART_THREADS, thread_name_prefix="s3-part")
            return self._executor

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(redirect=self.redirect_expiry is not None)

    # ---- keys ----------------------------------------------------------------------------------------------------
    def _key(self, path: str) -> str:
        return self._prefix + check_path(path)

    @staticmethod
    def _part_key(key: str, start: int) -> str:
        return paths.part_path(key, start)

    def _rel(self, key: str) -> str:
        return key[len(self._prefix) :]

    # ---- primitives --------------------------------------------------------------------------------------------
    def _put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.location.bucket, Key=key, Body=data)

    def _get(self, key: str, offset: int) -> BinaryIO:
        args = {"Bucket": self.location.bucket, "Key": key}
        if offset:
            args["Range"] = f"bytes={offset}-"
        try:
            body = self.client.get_object(**args)["Body"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code == "InvalidRange":  # reading from the very end
                return io.BytesIO(b"")
            if _missing(exc):
                raise PathNotFound(self._rel(key)) from None
            raise
        return io.BufferedReader(_BodyReader(body), buffer_size=1 << 20)

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def _plain_size(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def _list(
        self, prefix: str, delimiter: str | None = None, start_after: str | None = None, max_keys: int | None = None
    ) -> Iterator[dict]:
        """Pages of ListObjectsV2 below ``prefix`` (only the first page when ``max_keys`` is given)."""
        args: dict = {"Bucket": self.location.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        if start_after:
            args["StartAfter"] = start_after
        if max_keys is not None:
            args["MaxKeys"] = max_keys
            yield self.client.list_objects_v2(**args)
            return
        if self.list_page_size is not None:
            args["PaginationConfig"] = {"PageSize": self.list_page_size}
        paginator = self.client.get_paginator("list_objects_v2")
        yield from paginator.paginate(**args)

    def _parts(self, key: str) -> list[tuple[int, int]]:
        """(start, size) of each part of a parted file, in order; empty when it is not one."""
        parts = []
        for page in self._list(key + _PARTS):
            for item in page.get("Contents", []):
                parts.append((paths.part_start(item["Key"]), int(item["Size"])))
        parts.sort()
        return parts

    def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            if batch:
                answer = self.client.delete_objects(
                    Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                failed = answer.get("Errors") or []  # DeleteObjects answers 200 even when keys were not deleted
                if failed:
                    first = failed[0]
                    raise StorageUnreachable(
                        f"the S3 store did not delete {len(failed)} key(s), e.g. {first.get('Key')}: "
                        f"{first.get('Code')} {first.get('Message')}"
                    )

    def _delete_prefix(self, prefix: str) -> int:
        keys = [item["Key"] for page in self._list(prefix) for item in page.get("Contents", [])]
        self._delete_keys(keys)
        return len(keys)

    def _copy(self, source: str, dest: str, size: int | None = None) -> None:
        bucket = self.location.bucket
        if size is None:
            size = self._plain_size(source) or 0
        if size <= SINGLE_COPY_LIMIT:
            self.client.copy_object(Bucket=bucket, Key=dest, CopySource={"Bucket": bucket, "Key": source})
            return
        pieces = [(start, min(size, start + COPY_PART_SIZE) - 1) for start in range(0, size, COPY_PART_SIZE)]
        self._multipart_copy(dest, [(source, f"bytes={first}-{last}") for first, last in pieces])

    def _multipart_copy(self, dest: str, sources: list[tuple[str, str | None]]) -> None:
        bucket = self.location.bucket
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=dest)["UploadId"]
        try:
            done = []
            for number, (source, byte_range) in enumerate(sources, 1):
                args = {
                    "Bucket": bucket,
                    "Key": dest,
                    "UploadId": upload_id,
                    "PartNumber": number,
                    "CopySource": {"Bucket": bucket, "Key": source},
                }
                if byte_range:
                    args["CopySourceRange"] = byte_range
                etag = self.client.upload_part_copy(**args)["CopyPartResult"]["ETag"]
                done.append({"PartNumber": number, "ETag": etag})
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=dest, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=bucket, Key=dest, UploadId=upload_id)
            raise

    # ---- the driver interface ----------------------------------------------------------------------------------
    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except ClientError as exc:
            raise StorageError(
                f"bucket {self.location.bucket!r} ({self.location.describe()}) is not reachable: {exc}"
            ) from None

    @_unreachable_on_failure
    def get_content(self, path: str) -> bytes:
        with self.reader(path) as f:
            return f.read()

    @_unreachable_on_failure
    def put_content(self, path: str, data: bytes) -> None:
        key = self._key(path)
        self._put(key, data)
        if self._parts(key):  # content written by a writer before is replaced as a whole
            self._delete_prefix(key + _PARTS)

    @_unreachable_on_failure
    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        key = self._key(path)
        try:
            return self._get(key, offset)
        except PathNotFound:
            parts = self._parts(key)
            if not parts:
                raise
            return io.BufferedReader(_PartedReader(self, key, parts, offset), buffer_size=1 << 20)

    @_unreachable_on_failure
    def writer(self, path: str, offset: int = 0) -> FileWriter:
        return _PartWriter(self, self._key(path), offset)

    @_unreachable_on_failure
    def stat(self, path: str) -> FileInfo:
        key = self._key(path)
        head = self._head(key)
        if head is not None:
            return FileInfo(path, int(head["ContentLength"]), head["LastModified"].timestamp())
        newest = 0.0
        size = 0
        found = False
        for page in self._list(key + "/", delimiter="/"):
            found = found or bool(page.get("Contents") or page.get("CommonPrefixes"))
            break
        if found:
            return FileInfo(path, 0, 0.0, is_dir=True)
        for page in self._list(key + _PARTS):
            for item in page.get("Contents", []):
                found = True
                size += int(item["Size"])
                newest = max(newest, item["LastModified"].timestamp())
        if not found:
            raise PathNotFound(path)
        return FileInfo(path, size, newest)

    def _dir_prefix(self, path: str) -> str:
        return self._prefix if path in ("", "/") else self._key(path) + "/"

    @_unreachable_on_failure
    def list(self, path: str) -> list[str]:
        children: set[str] = set()
        for page in self._list(self._dir_prefix(path), delimiter="/"):
            for item in page.get("Contents", []):
                children.add(self._rel(item["Key"]))
            for common in page.get("CommonPrefixes", []):
                child = common["Prefix"]
                if child.endswith(_PARTS):  # a parted file shows as the file itself
                    child = child[: -len(_PARTS)]
                children.add(self._rel(child.rstrip("/")))
        if not children:
            raise PathNotFound(path)
        return sorted(children)

    def walk(self, path: str, start_after: str = "") -> Iterator[FileInfo]:
        """One ListObjectsV2 page at a time (no per-key HEAD), from S3's StartAfter. A parted file is reported once,
        with the size of all its parts, when its (contiguous) run of parts ends."""
        try:
            yield from self._walk(path, start_after)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnreachable(f"the S3 store failed: {exc}") from exc

    def _walk(self, path: str, start_after: str) -> Iterator[FileInfo]:
        after = ""
        if start_after:
            after = self._key(start_after)
            if any(page.get("Contents") for page in self._list(after + _PARTS, max_keys=1)):
                after = self._part_key(after, (1 << 64) - 1)  # it was parted: resume after its last possible part
        run: list = []  # [file key, size, newest] of the parted file whose parts are being listed
        for page in self._list(self._dir_prefix(path), start_after=after or None):
            for item in page.get("Contents", []):
                key, size, modified = item["Key"], int(item["Size"]), item["LastModified"].timestamp()
                base = paths.parted_file(key)
                if run and base != run[0]:
                    yield FileInfo(self._rel(run[0]), run[1], run[2])
                    run = []
                if base is None:
                    yield FileInfo(self._rel(key), size, modified)
                elif run:
                    run[1] += size
                    run[2] = max(run[2], modified)
                else:
                    run = [base, size, modified]
        if run:
            yield FileInfo(self._rel(run[0]), run[1], run[2])

    @_unreachable_on_failure
    def move(self, source: str, dest: str) -> None:
        src, dst = self._key(source), self._key(dest)
        size = self._plain_size(src)
        if size is not None:
            self._copy(src, dst, size)
            self._delete_keys([src])
            return
        parts = self._parts(src)
        if not parts:
            raise PathNotFound(source)
        if len(parts) == 1:
            self._copy(self._part_key(src, parts[0][0]), dst, parts[0][1])
        else:
            self._multipart_copy(dst, [(self._part_key(src, start), None) for start, _ in parts])
        self._delete_prefix(src + _PARTS)

    def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A presigned URL of the object (computed locally, no request), when redirects are on. Only whole objects
        (blobs) are offered; the URL carries its own signature, so it is never logged. Presigning costs ~150 µs
        of CPU, most of a redirect's, so a URL is handed out again for a tenth of its expiry (at most a minute):
        every URL given is valid for at least 90 % of ``redirect_expiry``."""
        if self.redirect_expiry is None:
            return None
        now = time.monotonic()
        cached = self._urls.get((method, path))
        if cached is not None and now - cached[0] < min(_URL_REUSE, self.redirect_expiry / 10):
            return cached[1]
        url = self.client.generate_presigned_url(
            "get_object" if method == "GET" else "head_object",
            Params={"Bucket": self.location.bucket, "Key": self._key(path)},
            ExpiresIn=int(self.redirect_expiry),
        )
        if len(self._urls) >= _URL_CACHE_SIZE:
            self._urls.clear()  # a bound, not an LRU: hot blobs are presigned again once
        self._urls[(method, path)] = (now, url)
        return url

    @_unreachable_on_failure
    def delete(self, path: str) -> None:
        key = self._key(path)
        if paths.whole_object(path):  # GC's deletes: a HEAD (DeleteObject cannot say it found nothing) + a DELETE
            if self._head(key) is None:
                raise PathNotFound(path)
            self.client.delete_object(Bucket=self.location.bucket, Key=key)
            return
        # Anything else may be a file, a file kept as parts or a prefix: one listing finds all three.
        keys = [
            item["Key"]
            for page in self._list(key)
            for item in page.get("Contents", [])
            if item["Key"] == key or item["Key"].startswith((key + "/", key + _PARTS))
        ]
        if not keys:
            raise PathNotFound(path)
        self._delete_keys(keys)
