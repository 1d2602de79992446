"""The storage-driver interface, modelled on CNCF Distribution's ``StorageDriver``.

Paths are '/'-separated keys relative to the driver's root; what lives where is ``storage/paths.py``. Drivers are
synchronous and thread-safe; the HTTP layer calls them from a thread pool so blocking I/O never stalls the event loop.
What differs between backends is said by ``capabilities``, which callers consult (never the driver's type). Every
backend must pass ``tests/storage/driver_suite.py``.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

_SAFE_PATH = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")


class StorageError(Exception):
    pass


class PathNotFound(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"no such path in storage: {path}")
        self.path = path


class StorageUnreachable(StorageError):
    """The storage backend failed or could not be reached (an object store after its retries): retry later."""


class InvalidPath(StorageError):
    pass


class InvalidOffset(StorageError):
    pass


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend does cheaply, so callers can choose how to use it."""

    redirect: bool  # ``redirect_url`` hands clients a URL to fetch content from the backend directly


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    modified: float  # epoch seconds
    is_dir: bool = False


def check_path(path: str) -> str:
    """Refuse anything that could escape the driver root (absolute paths, '..', odd characters)."""
    if not _SAFE_PATH.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise InvalidPath(f"invalid storage path {path!r}")
    return path


class FileWriter(abc.ABC):
    """A streaming writer. Content becomes durable and visible at its path only on ``commit``."""

    @abc.abstractmethod
    def write(self, data: bytes | memoryview) -> int: ...

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Bytes in the file so far, including the offset the writer resumed at."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Flush and make the content durable (fsync) at the writer's path."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Discard what this writer wrote."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources; content written so far stays (a later writer may resume from it)."""

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.cancel()
        else:
            self.close()


class StorageDriver(abc.ABC):
    name: str = "abstract"

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def get_content(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def put_content(self, path: str, data: bytes) -> None:
        """Atomically replace the content at path."""

    @abc.abstractmethod
    def reader(self, path: str, offset: int = 0) -> BinaryIO: ...

    @abc.abstractmethod
    def writer(self, path: str, offset: int = 0) -> FileWriter:
        """Write at path starting at ``offset``: 0 starts a new file; otherwise the file is resumed at offset
        and anything beyond it (a chunk that failed half-way) is discarded. InvalidOffset when the file is
        shorter than offset."""

    @abc.abstractmethod
    def stat(self, path: str) -> FileInfo: ...

    @abc.abstractmethod
    def list(self, path: str) -> list[str]:
        """Direct children of a directory-like prefix, as full paths; PathNotFound when absent."""

    @abc.abstractmethod
    def move(self, source: str, dest: str) -> None:
        """Atomically move source to dest, replacing dest."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Delete a file or a whole prefix; PathNotFound when absent."""

    @abc.abstractmethod
    def walk(self, path: str, start_after: str = "") -> Iterator[FileInfo]:
        """Every file below path ("" for all), lazily, in the order of their paths as byte strings (a file kept as
        parts shows once, with its whole size, where its parts sort). ``start_after`` (a path this walk yielded)
        resumes after it, so a long sweep can go page by page. No per-file request to the backend: listing pages
        (object stores) or directory scans (filesystem) carry each file's size and modification time. Nothing
        below path: no files, no error."""

    def check(self) -> None:
        """Raise (saying why) unless the storage is reachable and writable: the readiness probe (/readyz)."""
        self.list("")

    def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A URL clients can fetch the content from directly; None unless ``capabilities.redirect``. How long it
        stays valid is the driver's setting (``redirect_expiry``), not the caller's."""
        return None

    def seal_id(self, path: str) -> str | None:
        """The identity of the encrypted object stored at ``path`` (``soko.crypto``), for the metadata to record
        which object a row's content is; None when the content is not sealed."""
        return None

    def sealed_reader(self, path: str, offset: int, seal_id: str | None) -> BinaryIO:
        """``reader``, insisting (when ``seal_id`` is given) that the content is that very sealed object: another
        object's ciphertext swapped in, or plaintext put in its place, fails instead of being read."""
        return self.reader(path, offset)

    def local_path(self, path: str) -> str | None:
        """The file holding ``path``'s content on this machine, for the server to send itself; None if there is
        none (object stores)."""
        return None
