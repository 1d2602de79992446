"""Large streamed bodies sent by granian from a pipe, so that they go at the client's pace, in bounded memory.

granian's RSGI stream transport queues every piece it is given without bound (``send_bytes`` returns at once, even
at granian's HEAD): a body produced faster than the client takes it — a decrypted blob to a client on a slow link —
ends up whole in the server's memory (a 512 MiB blob pulled at 10 MB/s: +500 MiB resident). A file response is read
by granian as the client takes it. So a large streamed body goes through a FIFO that granian sends as a file: a piece
is written when the pipe has room, the event loop waiting for that as for a socket (no thread per response, so slow
clients hold no thread), and granian reads the pipe on its own threads. The pipe's capacity (1 MiB) is all that is
queued beyond the piece in hand.

The FIFO lives in this process's private directory (0700) under a random name. Until granian has opened it, the
sender holds a read end of its own (a write must not fail before then); once more than the pipe's capacity went in,
only granian can have made room, so it has the pipe open: the path and our read end go, and the end of granian's
reading (the client went away) fails the next write. A response ending earlier removes the path before it closes the
write end, so a late open by granian finds no file (granian's 404, to a client that is gone), never another file;
the write end itself stays open a few seconds for an open that found the path just before (``LATE_OPEN_GRACE``),
and a worker that stops lets go of those it still holds (``close_late``).
Anonymous pipes named by ``/proc/self/fd/N`` would need no directory, but a late open would then find whatever file
reused that descriptor number.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import secrets
import select
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("soko.http")

MIN_BODY = 4 << 20  # smaller bodies are queued by granian as before: little memory each, and no pipe to set up
PIPE_SIZE = 1 << 20  # the pipe's capacity (default 64 KiB; 1 MiB is Linux's default maximum for unprivileged users)
OPEN_WAIT = 60.0  # seconds granian may take to open a full pipe (it does in milliseconds) before the body is given up
# A body that ends before granian is known to have opened the pipe keeps its write end this long after the path is
# gone: an open that found the path a moment before must not wait for a writer that will never come.
LATE_OPEN_GRACE = 5.0
# Threads that copy a reader straight into a pipe (``copy``): no event loop per piece, which is what the pipe
# otherwise costs (a wake-up each time granian takes 128 KiB). A slow client holds its thread (a stalled one for
# STALL seconds at most), so there are few of them; beyond this many, bodies are written from the event loop
# (``pump``): bounded all the same, more CPU.
WRITERS = 16
PIECE = 1 << 20
# Seconds a copy waits for a client that takes nothing before it gives its thread back: the rest of that body is
# written from the event loop (as ``pump`` does), so a few stalled clients do not hold every copy thread.
STALL = 10.0
_STOP_CHECK_MS = 1000  # how often a waiting copy looks whether its response was abandoned

_directory: str | None = None
_writers: ThreadPoolExecutor | None = None
_busy = 0  # copies running (counted on the event loop's thread)
# Write ends kept LATE_OPEN_GRACE seconds after their body ended (``Pipe.close``): descriptor → (the loop whose timer
# closes it, that timer). A worker stopping lets go of its loop's (``close_late``): its timers would never run.
_late: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle]] = {}
_LATE_CHECK = 0.05  # seconds between two looks, while a worker stops, whether granian opened such a pipe


def _fifo_directory() -> str | None:
    """This process's private directory for FIFOs (made once, removed at exit); None where there are no FIFOs or
    pipe sizes (not Linux: bodies are then queued as before)."""
    global _directory
    if _directory is None:
        if not hasattr(os, "mkfifo") or not hasattr(fcntl, "F_SETPIPE_SZ"):
            return None
        _directory = tempfile.mkdtemp(prefix="soko-pipes-")  # 0700
        atexit.register(shutil.rmtree, _directory, True)
    return _directory


def available() -> bool:
    return _fifo_directory() is not None


class Stalled(Exception):
    """The client took nothing for ``STALL`` seconds; ``unwritten``: what the copy had in hand."""

    def __init__(self, unwritten: bytes) -> None:
        super().__init__(f"the client took nothing for {STALL:.0f} s")
        self.unwritten = unwritten


class Pipe:
    """A FIFO granian reads as a file (``path``), and its non-blocking write end."""

    def __init__(self) -> None:
        directory = _fifo_directory()
        assert directory is not None
        self.path = os.path.join(directory, secrets.token_hex(16))
        self.written = 0
        self._keep: int | None = None
        self._write: int | None = None
        try:
            os.mkfifo(self.path, 0o600)
        except FileNotFoundError:  # the directory was removed (a /tmp cleaner): a new one
            global _directory
            _directory = None
            directory = _fifo_directory()
            assert directory is not None
            self.path = os.path.join(directory, os.path.basename(self.path))
            os.mkfifo(self.path, 0o600)
        try:
            # our own read end first: the write end then opens at once, and no write fails before granian opens it
            self._keep = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._write = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # (past pipe-user-pages-soft: smaller, still bounded)
                fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            self.capacity = fcntl.fcntl(self._write, fcntl.F_GETPIPE_SZ)
        except BaseException:
            self.close()
            raise

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """All of ``data``, as the pipe makes room. ``BrokenPipeError`` once granian closed its end (the client went
        away), or when granian did not open the pipe within ``OPEN_WAIT`` seconds. ``data`` is not kept."""
        fd = self._write
        if fd is None:
            raise BrokenPipeError("the response is over")
        view = memoryview(data).cast("B")
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                await self._writable(fd)
                continue
            view = view[n:]
            self._wrote(n)

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, wake)
        try:
            if self._keep is None:
                await ready  # (granian's end closing wakes us too: the next write fails)
            else:
                try:
                    await asyncio.wait_for(ready, OPEN_WAIT)
                except TimeoutError:
                    raise BrokenPipeError(f"the pipe was not opened within {OPEN_WAIT:.0f} s") from None
        finally:
            loop.remove_writer(fd)

    def write_blocking(self, data: memoryview, stop: threading.Event) -> None:
        """``write`` for a thread: waits in poll (no event loop); ``BrokenPipeError`` also once ``stop`` is set,
        ``Stalled`` when granian took nothing for ``STALL`` seconds."""
        fd = self._write
        if fd is None:
            raise BrokenPipeError("the response is over")
        view = data
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                poll = select.poll()
                poll.register(fd, select.POLLOUT)
                since = time.monotonic()
                while not poll.poll(min(_STOP_CHECK_MS, int(STALL * 1000) + 1)):
                    if stop.is_set():
                        raise BrokenPipeError("the response was abandoned") from None
                    waited = time.monotonic() - since
                    if self._keep is not None and waited > OPEN_WAIT:
                        raise BrokenPipeError(f"the pipe was not opened within {OPEN_WAIT:.0f} s") from None
                    if self._keep is None and waited > STALL:
                        raise Stalled(bytes(view)) from None
                continue
            view = view[n:]
            self._wrote(n)

    def _wrote(self, n: int) -> None:
        self.written += n
        if self._keep is not None and self.written > self.capacity:
            # only a reader made room for this, and we never read: granian has the pipe open
            self._unlink()
            os.close(self._keep)
            self._keep = None

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        """End the body (granian reads to its end: short of Content-Length, the client sees it cut off)."""
        self._unlink()  # (first: an open still to come finds no file)
        write, keep, self._write, self._keep = self._write, self._keep, None, None
        if keep is not None:
            os.close(keep)
            if write is not None:
                with contextlib.suppress(RuntimeError):  # (no running loop: closed at once)
                    loop = asyncio.get_running_loop()
                    _late[write] = (loop, loop.call_later(LATE_OPEN_GRACE, _close_late, write))
                    return
        if write is not None:
            os.close(write)


def _close_late(fd: int) -> None:
    if _late.pop(fd, None) is not None:  # (a descriptor in ``_late`` is still ours: its number is not reused)
        os.close(fd)


async def close_late() -> None:
    """Let go of the write ends this loop still keeps for a late open (``Pipe.close``), for a worker that stops:
    its loop ends, and their timers with it (the descriptor stayed open, and granian, reading a pipe that never
    ends, could not stop). Those granian has open go at once (it reads to their end: the body is cut off); the
    others once their grace has passed, since an open that found the path may still come (at most
    ``LATE_OPEN_GRACE`` seconds from now), or as soon as granian has opened them."""
    loop = asyncio.get_running_loop()

    def mine() -> list[int]:
        return [fd for fd, (owner, _) in list(_late.items()) if owner is loop]

    while waiting := mine():
        opened = _read_elsewhere(waiting)
        for fd in waiting:
            timer = _late[fd][1]
            if fd in opened or timer.when() <= loop.time():
                timer.cancel()
                _close_late(fd)
        if mine():
            await asyncio.sleep(_LATE_CHECK)


def _read_elsewhere(fds: list[int]) -> set[int]:
    """Those of ``fds`` (write ends) whose pipe another descriptor of this process has open: granian's read end."""
    pipes: dict[tuple[int, int], int] = {}
    for fd in fds:
        with contextlib.suppress(OSError):
            stat = os.fstat(fd)
            pipes[(stat.st_dev, stat.st_ino)] = fd
    own, found = set(fds), set[int]()
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # (no /proc: each waits out its grace)
        return found
    for name in names:
        other = int(name)
        if other in own:
            continue
        try:
            stat = os.fstat(other)
        except OSError:  # (closed since the listing)
            continue
        write_end = pipes.get((stat.st_dev, stat.st_ino))
        if write_end is not None:
            found.add(write_end)
    return found


async def pump(pipe: Pipe, body: AsyncIterator[bytes]) -> None:
    """Write ``body`` into ``pipe`` as the client takes it; raises what the body raises, and ``BrokenPipeError`` when
    the client went away. Each piece is written before the next one is asked for (a body may reuse its buffers)."""
    async for piece in body:
        await pipe.write(piece)


class Writer:
    """A copy thread claimed for one response (``claim_writer``); ``release`` gives it back, once. Event loop only."""

    def __init__(self) -> None:
        self._held = True

    def release(self) -> None:
        global _busy
        if self._held:
            self._held = False
            _busy -= 1


def claim_writer() -> Writer | None:
    """A copy thread for one response, or None when all are taken. Event loop only."""
    global _busy, _writers
    if _busy >= WRITERS:
        return None
    if _writers is None:
        _writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="soko-pipe")
    _busy += 1
    return Writer()


async def copy(pipe: Pipe, reader: Any, length: int, writer: Writer) -> None:
    """``length`` bytes of ``reader`` into ``pipe`` on the copy thread ``writer`` claimed: read (a sealed reader
    decrypts into the buffer) and written, one reused buffer, no event loop per piece. A client that stalls gets the
    rest from the event loop, the thread released for others. Raises what the reader raises, ``OSError`` when its
    content ends early, ``BrokenPipeError`` when the client went away. Cancelled, it stops the thread (within a
    second) before it returns: the caller closes the reader and the pipe after."""
    stop = threading.Event()
    assert _writers is not None
    running = asyncio.get_running_loop().run_in_executor(_writers, _copy, pipe, reader, length, stop)
    try:
        stalled = await asyncio.shield(running)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        raise
    if stalled is not None:
        unwritten, remaining = stalled
        writer.release()
        await pipe.write(unwritten)  # (waits for the client in the event loop, holding no thread)
        rest = _read_rest(reader, remaining)
        try:
            await pump(pipe, rest)
        finally:
            await rest.aclose()


async def _read_rest(reader: Any, remaining: int) -> AsyncGenerator[bytes, None]:
    """The reader's next ``remaining`` bytes, each piece read on the thread pool."""
    loop = asyncio.get_running_loop()
    while remaining > 0:
        reading = loop.run_in_executor(None, reader.read, min(PIECE, remaining))
        try:
            data = await asyncio.shield(reading)
        except asyncio.CancelledError:
            await asyncio.gather(reading, return_exceptions=True)  # the reader is closed after us: let the read end
            raise
        if not data:
            raise OSError(f"the content ended {remaining} bytes early; run soko fsck")
        remaining -= len(data)
        yield data


def _copy(pipe: Pipe, reader: Any, length: int, stop: threading.Event) -> tuple[bytes, int] | None:
    """None when all went in; (the bytes in hand, the bytes not read yet) when the client stalled."""
    view = memoryview(bytearray(min(PIECE, length)))
    remaining = length
    while remaining > 0:
        if stop.is_set():
            raise BrokenPipeError("the response was abandoned")
        n = reader.readinto(view[: min(len(view), remaining)])
        if not n:
            raise OSError(f"the content ended {remaining} bytes early; run soko fsck")
        remaining -= n
        try:
            pipe.write_blocking(view[:n], stop)
        except Stalled as exc:
            return exc.unwritten, remaining
    return None
