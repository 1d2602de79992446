"""The storage driver a deployment uses, from ``storage_url`` (``SOKO_STORAGE_URL``).

``file:///path`` (default: ``<data-dir>/storage``) is the embedded filesystem driver; ``s3://bucket/prefix?…`` an
S3-compatible object store that many stateless nodes share (see ``storage/s3.py``).
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from soko.storage.base import StorageDriver
from soko.storage.filesystem import FilesystemDriver
from soko.storage.s3 import S3Driver, S3Location


def open_storage(storage_url: str, default_root: str, *, redirect_expiry: float | None = None) -> StorageDriver:
    """``redirect_expiry`` (seconds) turns on presigned redirects for blob downloads (S3 storage only)."""
    scheme = urlsplit(storage_url).scheme
    if redirect_expiry is not None and scheme != "s3":
        # Accepted, it would do nothing: blobs would keep streaming through Soko while the operator believes not.
        raise ValueError(
            "storage_redirect needs S3 storage (storage_url = s3://bucket/prefix?endpoint_url=…): a filesystem store "
            "has no presigned URLs to redirect to. Set storage_redirect = false, or move the blobs to S3"
        )
    if not storage_url:
        return FilesystemDriver(default_root)
    if scheme == "file":
        parts = urlsplit(storage_url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file storage URLs name a local path (file:///path), not a host: {storage_url!r}")
        path = unquote(parts.path)
        if not os.path.isabs(path):
            raise ValueError(f"file storage URLs need an absolute path (file:///path): {storage_url!r}")
        return FilesystemDriver(path)
    if scheme == "s3":
        return S3Driver(S3Location.parse(storage_url), redirect_expiry=redirect_expiry)
    raise ValueError(
        f"unsupported storage URL {storage_url!r}: use file:///path or s3://bucket/prefix?endpoint_url=…"
    )
