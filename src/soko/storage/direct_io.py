"""Blob files written around the page cache (``O_DIRECT``), through a small page-aligned staging buffer.

Why: everything the filesystem driver stores is ciphertext (``crypto/driver.py``), and pulls are served from the
plaintext cache (``storage/plain_cache.py``, tmpfs) or decrypted as they are read, so a blob's ciphertext in the page
cache serves nothing right after its push — yet writing it there was the slowest part of a push. On the project VM
(ext4 on virtio-blk), 256 MiB written in a row into a new file: buffered ``write`` 370 to 430 MB/s even without any
``fsync`` (page-cache allocation and ext4's delayed allocation), ``O_DIRECT`` with 1 MiB writes and a final ``fsync``
2.3 to 2.9 GB/s (256 KiB writes: 1.7 GB/s; 4 MiB: no better than 1 MiB). Direct writes also leave nothing dirty, so
the ``fsync`` that makes a push durable before its 201 has only the disk's cache and the file's metadata to flush.

``O_DIRECT`` needs the buffer, the file offset and the length aligned (to the device's logical block; ``ALIGN``
covers every common one). So bytes are gathered in an aligned buffer (one of a pool, reused so they stay faulted in)
and written a whole buffer at a time, on a writer thread while the next buffer fills; the last partial block is
written padded and the file truncated back to its size. A writer resumed at an unaligned offset reads the partial
block before it back into the buffer first. A filesystem that refuses ``O_DIRECT`` (tmpfs before Linux 6.6, some
FUSE and network filesystems) gets buffered writes: the open, or the first write, says so, and the writer carries
on buffered with the same bytes.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import threading
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("soko.storage")

ALIGN = 4096
BUFFER = 1 << 20  # bytes per direct write (see above: 1 MiB is as fast as larger)
KEEP_FREE = 16  # staging buffers kept for reuse (two per writer)
WRITE_THREADS = 8  # threads writing staged buffers, shared by every writer (one write in flight per writer)
O_DIRECT = getattr(os, "O_DIRECT", 0)


class _BufferPool:
    """Page-aligned staging buffers (anonymous mmaps), reused: a fresh mapping costs page faults on every write."""

    def __init__(self, keep: int = KEEP_FREE) -> None:
        self._free: list[mmap.mmap] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, BUFFER, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # (never shared across a fork)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffer)
                return
        buffer.close()


POOL = _BufferPool()


def open_direct(path: str, flags: int, mode: int) -> tuple[int, bool]:
    """``os.open`` with ``O_DIRECT`` where the filesystem takes it; returns (fd, direct)."""
    if O_DIRECT:
        try:
            return os.open(path, flags | O_DIRECT, mode), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.open(path, flags, mode), False


def _writers() -> ThreadPoolExecutor:
    global _WRITERS
    with _WRITERS_LOCK:
        if _WRITERS is None:
            _WRITERS = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="soko-dio")
        return _WRITERS


_WRITERS: ThreadPoolExecutor | None = None
_WRITERS_LOCK = threading.Lock()


def _forget_writers() -> None:
    """In a forked child: the parent's writer threads are not there (work handed to their pool would never run)."""
    global _WRITERS, _WRITERS_LOCK
    _WRITERS, _WRITERS_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers)


class DirectAppender:
    """Appends to ``fd`` (opened with ``O_DIRECT``) from ``offset`` on; ``finish`` writes what is staged and leaves
    the file exactly ``offset`` + the bytes written long. Two staging buffers: one fills while the other is written
    on a writer thread (a direct write waits for the disk; the caller seals the next megabyte meanwhile). Not
    thread-safe (a writer is used by one thread at a time). ``direct`` turns False when the filesystem refuses a
    direct write: the rest goes through the page cache."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.direct = True
        self._buffers: list[mmap.mmap] = [POOL.take(), POOL.take()]
        self._views = [memoryview(buffer) for buffer in self._buffers]
        self._current = 0  # the buffer filling; the other one may be being written (``_pending``)
        self._pending: Future | None = None
        self._position = offset - offset % ALIGN  # file offset of the filling buffer's first byte (aligned)
        self._held = offset - self._position
        if self._held:  # the partial block before the resume point is written again with what follows
            read = os.preadv(fd, [self._views[0][:ALIGN]], self._position)
            if read < self._held:
                self.release()
                raise OSError(errno.EIO, f"short read of the block before offset {offset}")

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        count = len(view)
        while view:
            take = min(BUFFER - self._held, len(view))
            self._views[self._current][self._held : self._held + take] = view[:take]
            self._held += take
            view = view[take:]
            if self._held == BUFFER:
                self._wait()  # (the other buffer's write: its error, if any, is raised here)
                self._pending = _writers().submit(self._write_out, self._views[self._current], BUFFER, self._position)
                self._current ^= 1
                self._position += BUFFER
                self._held = 0
        return count

    def finish(self) -> None:
        """Write what is staged (padded to a block), cut the file to its size, and give the buffers back."""
        if not self._buffers:
            return
        try:
            self._wait()
            if self._held:
                end = self._position + self._held
                self._write_out(self._views[self._current], -(-self._held // ALIGN) * ALIGN, self._position)
                os.ftruncate(self.fd, end)
        finally:
            self.release()

    def release(self) -> None:
        """Give the buffers back without writing more (the file is being discarded): once no write uses them."""
        if not self._buffers:
            return
        if self._pending is not None:
            futures.wait([self._pending])
            self._pending = None
        for view in self._views:
            view.release()
        for buffer in self._buffers:
            POOL.give(buffer)
        self._buffers, self._views = [], []

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write_out(self, view: memoryview, length: int, position: int) -> None:
        done = 0
        while done < length:
            try:
                done += os.pwrite(self.fd, view[done:length], position + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self._go_buffered()  # (the padding of a last block goes too: ``finish`` cuts the file after it)

    def _go_buffered(self) -> None:
        log.warning("direct writes refused by the filesystem (EINVAL); writing through the page cache")
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~O_DIRECT)
        self.direct = False
