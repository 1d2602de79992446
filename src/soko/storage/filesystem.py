"""Local-filesystem driver: the embedded default.

Durability: writers fsync on commit; ``put_content`` and ``move`` go through a temp file + ``os.replace`` and fsync
the parent directory, so a crash leaves either the old or the new content, never a torn file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from soko.private import FILE_MODE, make_dirs
from soko.storage.base import (
    Capabilities,
    FileInfo,
    FileWriter,
    InvalidOffset,
    PathNotFound,
    StorageDriver,
    check_path,
)
from soko.storage.direct_io import DirectAppender, open_direct
from soko.storage.page_cache import RECENT, WRITEBACK_EVERY, write_back


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Writers start writeback as they go and keep only the most recent writes cached (see storage/page_cache.py).
FLUSH_BEHIND = WRITEBACK_EVERY


class _FileWriter(FileWriter):
    """Writes a blob file around the page cache where the filesystem allows (``storage/direct_io.py``), else through
    it with bounded writeback (``storage/page_cache.py``)."""

    def __init__(self, full_path: str, offset: int) -> None:
        self._path = full_path
        if offset:
            try:
                fd, direct = open_direct(full_path, os.O_RDWR, FILE_MODE)
            except (FileNotFoundError, NotADirectoryError):
                raise InvalidOffset(f"cannot resume {full_path} at {offset}: no such file") from None
            end = os.lseek(fd, 0, os.SEEK_END)
            if end < offset:
                os.close(fd)
                raise InvalidOffset(f"cannot resume {full_path} at {offset}: it holds only {end} bytes")
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        else:
            make_dirs(os.path.dirname(full_path))
            fd, direct = open_direct(full_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        self._fd = fd
        try:
            self._direct = DirectAppender(fd, offset) if direct else None
        except BaseException:
            os.close(fd)
            raise
        self._size = offset
        self._flushed = offset  # written back (or being written back) up to here
        self._previous = offset  # the window before: waited for at the next flush
        self._closed = False

    def write(self, data: bytes | memoryview) -> int:
        if self._direct is not None:
            written = self._direct.write(data)
            self._size += written
            if self._direct.direct:
                return written
        else:
            view = memoryview(data).cast("B")
            written = 0
            while written < len(view):  # (a short write is not an error: write the rest)
                written += os.write(self._fd, view[written:])
            self._size += written
        if self._size - self._flushed >= FLUSH_BEHIND:
            self._flush_behind()
        return written

    def _flush_behind(self) -> None:
        write_back(self._fd, self._flushed, self._size, self._previous)
        RECENT.add(self, self._fd, self._flushed, self._size)
        self._previous, self._flushed = self._flushed, self._size

    @property
    def size(self) -> int:
        return self._size

    def commit(self) -> None:
        if self._direct is not None:
            self._direct.finish()
        os.fsync(self._fd)
        if self._direct is None or not self._direct.direct:
            RECENT.add(self, self._fd, self._flushed, self._size)
        self.close()

    def cancel(self) -> None:
        if self._direct is not None:
            self._direct.release()
        self.close()
        RECENT.forget(self)
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Without a commit: what was written stays (an upload resumes after it), not yet made durable."""
        if not self._closed:
            self._closed = True
            try:
                if self._direct is not None:
                    self._direct.finish()
            finally:
                os.close(self._fd)


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(redirect=False)

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        make_dirs(self.root)

    def _full(self, path: str) -> str:
        return os.path.join(self.root, check_path(path))

    def check(self) -> None:
        if not os.path.isdir(self.root):
            raise OSError(f"{self.root} is not a directory (any more)")
        if not os.access(self.root, os.W_OK | os.X_OK):  # also false on a read-only mount
            raise OSError(f"{self.root} is not writable")

    def get_content(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise PathNotFound(path) from None

    def put_content(self, path: str, data: bytes) -> None:
        full = self._full(path)
        make_dirs(os.path.dirname(full))
        tmp = f"{full}.tmp-{uuid.uuid4().hex}"
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, full)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(full))

    def local_path(self, path: str) -> str | None:
        return self._full(path)

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        try:
            f = open(self._full(path), "rb")  # noqa: SIM115 - returned to the caller
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise PathNotFound(path) from None
        if offset:
            f.seek(offset)
        return f

    def writer(self, path: str, offset: int = 0) -> FileWriter:
        return _FileWriter(self._full(path), offset)

    def stat(self, path: str) -> FileInfo:
        try:
            st = os.stat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        is_dir = os.path.isdir(self._full(path))
        return FileInfo(path=path, size=0 if is_dir else st.st_size, modified=st.st_mtime, is_dir=is_dir)

    def list(self, path: str) -> list[str]:
        full = self.root if path in ("", "/") else self._full(path)
        try:
            names = sorted(os.listdir(full))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        prefix = "" if path in ("", "/") else path + "/"
        return [prefix + n for n in names if ".tmp-" not in n]

    def walk(self, path: str, start_after: str = "") -> Iterator[FileInfo]:
        full = self.root if path in ("", "/") else self._full(path)
        yield from self._walk(full, "" if path in ("", "/") else path + "/", start_after)

    def _walk(self, full: str, prefix: str, start_after: str) -> Iterator[FileInfo]:
        # One scandir per directory: the file type comes with the entry, so only files are stat'ed (for their size
        # and mtime), never directories. A directory sorts as "<name>/" so files come in the order of their paths.
        try:
            with os.scandir(full) as scan:
                entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in scan]
        except (FileNotFoundError, NotADirectoryError):
            return
        for key, entry in sorted(entries, key=lambda item: item[0]):
            rel = prefix + key
            if key.endswith("/"):
                if start_after >= rel and not start_after.startswith(rel):
                    continue  # everything in it comes before start_after
                yield from self._walk(entry.path, rel, start_after)
            elif rel > start_after and ".tmp-" not in key:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted since the scan
                    continue
                yield FileInfo(path=rel, size=st.st_size, modified=st.st_mtime)

    def move(self, source: str, dest: str) -> None:
        src_full, dst_full = self._full(source), self._full(dest)
        if not os.path.exists(src_full):
            raise PathNotFound(source)
        make_dirs(os.path.dirname(dst_full))
        os.replace(src_full, dst_full)
        _fsync_dir(os.path.dirname(dst_full))

    def delete(self, path: str) -> None:
        full = self._full(path)
        if os.path.isdir(full):
            try:
                shutil.rmtree(full)
            except FileNotFoundError:  # removed concurrently by someone else: the outcome is the same
                if os.path.exists(full):
                    raise
                raise PathNotFound(path) from None
        else:
            try:
                os.unlink(full)
            except (FileNotFoundError, NotADirectoryError):
                raise PathNotFound(path) from None
