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
and written a whole buffer at a time; the last partial block is written padded and the file truncated back to its
size. A writer resumed at an unaligned offset reads the partial block before it back into the buffer first.
A filesystem that refuses ``O_DIRECT`` (tmpfs before Linux 6.6, some FUSE and network filesystems) gets buffered
writes: the open, or the first write, says so, and the writer carries on buffered with the same bytes.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import threading

log = logging.getLogger("soko.storage")

ALIGN = 4096
BUFFER = 1 << 20  # bytes per direct write (see above: 1 MiB is as fast as larger)
KEEP_FREE = 8  # staging buffers kept for reuse
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
        return mmap.mmap(-1, BUFFER)

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


class DirectAppender:
    """Appends to ``fd`` (opened with ``O_DIRECT``) from ``offset`` on; ``finish`` writes what is staged and leaves
    the file exactly ``offset`` + the bytes written long. Not thread-safe (a writer is used by one thread at a
    time). ``direct`` turns False when the filesystem refuses a direct write: the rest goes through the page cache."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.direct = True
        self._buffer: mmap.mmap | None = POOL.take()
        self._view = memoryview(self._buffer)
        self._position = offset - offset % ALIGN  # file offset of the buffer's first byte (aligned)
        self._held = offset - self._position
        if self._held:  # the partial block before the resume point is written again with what follows
            read = os.preadv(fd, [self._view[:ALIGN]], self._position)
            if read < self._held:
                raise OSError(errno.EIO, f"short read of the block before offset {offset}")

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        count = len(view)
        while view:
            take = min(BUFFER - self._held, len(view))
            self._view[self._held : self._held + take] = view[:take]
            self._held += take
            view = view[take:]
            if self._held == BUFFER:
                self._write_out(BUFFER)
                self._position += BUFFER
                self._held = 0
        return count

    def finish(self) -> None:
        """Write what is staged (padded to a block), cut the file to its size, and give the buffer back."""
        if self._buffer is None:
            return
        try:
            if self._held:
                end = self._position + self._held
                self._write_out(-(-self._held // ALIGN) * ALIGN if self.direct else self._held)
                os.ftruncate(self.fd, end)
        finally:
            self.release()

    def release(self) -> None:
        """Give the buffer back without writing (the file is being discarded)."""
        if self._buffer is not None:
            self._view.release()
            POOL.give(self._buffer)
            self._buffer = None

    def _write_out(self, length: int) -> None:
        done = 0
        while done < length:
            try:
                done += os.pwrite(self.fd, self._view[done:length], self._position + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self._go_buffered()
                length = min(length, self._held)  # no padding through the page cache

    def _go_buffered(self) -> None:
        log.warning("direct writes refused by the filesystem (EINVAL); writing through the page cache")
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~O_DIRECT)
        self.direct = False
