"""The data listener: presigned layer URLs (``/layers/<token>``) served with sendfile(2).

Why a second listener: granian (the main listener) sends a file by reading 128 KiB pieces into fresh buffers on its
own threads, and RSGI never hands Soko the socket, so a blob body always passes through user space; Distribution
sends with ``sendfile`` and pulls a warm layer almost twice as fast (docs/performance.md). So, as ECR answers a
layer GET with a 307 to a presigned S3 URL, Soko answers a /v2/ GET of a large blob whose plaintext is in the
memory cache with a 307 to a presigned layer URL here, after the same authorization; this listener checks the URL's
signature, that the repository still holds the blob and a KMS repository's key, then hands the cached file to the
kernel and meters the download (the bytes that went out).

Two threads or more per worker run this listener, each on an event loop of its own (the standard selector loop: its
``loop.sendfile`` is the real system call), so a long ``sendfile`` never delays the main loop's small requests.
HTTP/1.1 is parsed by h11; a request head is bounded (16 KiB), must end every line in CRLF and must arrive within
``keepalive_timeout``, and connections beyond ``max_connections`` are closed at once; a client that stops reading an
answer for ``keepalive_timeout`` is cut off (TCP_USER_TIMEOUT). So clients that connect and send nothing, send forever
or never read hold neither memory nor threads for long. Plain HTTP only: ``sendfile`` cannot go through TLS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from typing import BinaryIO
from urllib.parse import unquote

import h11

from soko.http.access_log import loggable_path
from soko.http.messages import AnyResponse, FileResponse, Request, Response, StreamResponse, error_response, report_sent
from soko.http.rsgi import MAX_TARGET_BYTES, Handler, Observer

log = logging.getLogger("soko.http")
MAX_HEAD = 16384  # request line and headers (the main listener's limit)
READ_SIZE = 65536
LAYERS_PREFIX = "/layers/"
# Threads for the handler's blocking work (token → database row, KMS, a plaintext cache miss's reads), per listener
# thread: few, as they share the worker's database pool with the main loop's.
IO_THREADS = 4


class DataListener:
    """Serves ``handle`` (the presigned layers handler) on ``sock`` from ``threads`` threads, each with its own
    event loop accepting on the socket, until ``close()``. The kernel's copies run in ``sendfile`` without the GIL,
    so two threads copy on two cores."""

    def __init__(
        self,
        handle: Handler,
        sock: socket.socket,
        observe: Observer | None = None,
        keepalive_timeout: float = 120.0,
        max_connections: int = 1024,
        threads: int = 1,
    ) -> None:
        # One limit for all the threads: each accepts whatever connections the kernel hands it (a burst may all go
        # to one), so a share per thread would refuse connections while another thread has room.
        self._slots = _Slots(max_connections)
        self._servers = [
            _Server(handle, sock, observe, keepalive_timeout, self._slots, f"soko-data-{n}") for n in range(threads)
        ]

    @property
    def in_flight(self) -> int:
        return sum(server.in_flight for server in self._servers)

    @property
    def connections(self) -> int:
        return self._slots.taken

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting; downloads in flight may finish for up to ``timeout`` seconds."""
        for server in self._servers:
            server.stop(timeout)
        for server in self._servers:
            server.join(timeout + 5)


class _Slots:
    """The connections the listener's threads may hold together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.taken >= self.limit:
                return False
            self.taken += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.taken -= 1


class _Server:
    """One thread's event loop serving the data listener's socket."""

    def __init__(
        self,
        handle: Handler,
        sock: socket.socket,
        observe: Observer | None,
        keepalive_timeout: float,
        slots: _Slots,
        name: str,
    ) -> None:
        self.handle = handle
        self.observe = observe
        self.keepalive_timeout = keepalive_timeout
        self.slots = slots
        self.in_flight = 0
        self._closing = False
        self._sock = socket.socket(fileno=sock.dup().detach())  # (the server closes its own copy)
        self._sock.setblocking(False)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._open: dict[asyncio.Task, asyncio.StreamWriter] = {}  # every connection's task
        self._idle: set[asyncio.StreamWriter] = set()  # connections waiting for a request
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._server is None:  # (the worker stops: a data port nobody answers on would fail every redirect)
            raise RuntimeError(f"the data listener's thread {name} did not start; see the log above")

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(IO_THREADS, thread_name_prefix="soko-data-io")
        )
        try:
            loop.run_until_complete(self._main())
        except Exception:
            log.exception("the data listener stopped")
        finally:
            self._ready.set()  # (a start that failed is not waited for)
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, sock=self._sock, limit=READ_SIZE)
        self._ready.set()
        await self._stopping.wait()

    def stop(self, timeout: float) -> None:
        if not self._thread.is_alive():
            return

        def stop() -> None:
            if self._server is not None:
                self._server.close()
            self._closing = True
            for writer in self._idle:  # no request of theirs will be answered
                writer.transport.abort()
            self._loop.create_task(self._drain(timeout))

        self._loop.call_soon_threadsafe(stop)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    async def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Downloads still going are cut off: the loop closes with no connection open and no task pending.
        tasks = list(self._open)
        for task, writer in self._open.items():
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        assert self._stopping is not None
        self._stopping.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.slots.take():
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        lines = _LineEnds()
        clean = False
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # A client that stops reading (its window stays shut) is cut off by the kernel after
                # keepalive_timeout: neither sendfile nor a drain has a timeout of its own, and a download may rightly
                # take longer.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.keepalive_timeout * 1000))
            while await self._exchange(conn, lines, reader, writer):
                conn.start_next_cycle()
            clean = True
        except (ConnectionError, TimeoutError, h11.LocalProtocolError) as exc:
            log.debug("data listener connection ended: %s", exc)
        finally:
            self.slots.give_back()
            self._open.pop(task, None)
            self._idle.discard(writer)
            if clean:
                writer.close()  # (what is written was drained: nothing left for a client that stopped reading)
            else:  # a body cut short, or a client gone or too slow: nothing more is sent
                writer.transport.abort()

    async def _exchange(
        self, conn: h11.Connection, lines: _LineEnds, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """One request and its answer; whether the connection may carry another."""
        # One deadline for the whole request (the wait for it included), not one per read: a client sending a
        # byte now and then would otherwise hold its connection for ever.
        deadline = asyncio.get_running_loop().time() + self.keepalive_timeout
        if self._closing:
            return False
        try:
            self._idle.add(writer)
            try:
                event = await self._next_event(conn, lines, reader, deadline)
            finally:
                self._idle.discard(writer)
            if not isinstance(event, h11.Request):
                return False
            # A body is refused before any of it is read, and the connection closed after the answer: whatever
            # framing it claims (both Transfer-Encoding and Content-Length: a front proxy may have framed it by the
            # other one, RFC 9112 §6.1) nothing after this head is taken for a request.
            if _has_body(event) or not isinstance(
                await self._next_event(conn, lines, reader, deadline), h11.EndOfMessage
            ):
                response: AnyResponse | None = error_response(400, "UNSUPPORTED", "a layer download has no body")
            else:
                response = None
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                body = error_response(status, "UNSUPPORTED", f"malformed request: {exc}")
                await self._send_simple(conn, writer, body, False, True, _Sent())
            return False
        self.in_flight += 1
        started = time.perf_counter()
        request = _request(event, writer)
        status, sent = 500, _Sent()
        try:
            if response is None:
                response = await self._respond(request)
            status = response.status
            head, close = request.method == "HEAD", conn.their_state is not h11.DONE or self._closing
            answered = await self._send(conn, writer, response, head, close, sent)
            if not answered:  # the cached file left between the handler's look and its open: asked again, the
                response = await self._respond(request)  # handler reads the blob from storage
                status = response.status
                answered = await self._send(conn, writer, response, head, close, sent)
            if not answered:
                response = error_response(404, "BLOB_UNKNOWN", "the layer left this node's cache; retry the download")
                status = response.status
                await self._send_simple(conn, writer, response, head, close, sent)
        finally:
            report_sent(response, sent.n)  # (the bytes that left: all, or up to where the download was cut off)
            self.in_flight -= 1
            if self.observe is not None:
                try:
                    self.observe(request, status, sent.n, started, time.perf_counter())
                except Exception:  # bookkeeping must never turn into a failed request
                    log.exception("could not record request %s %s", request.method, loggable_path(request.path))
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _next_event(
        self, conn: h11.Connection, lines: _LineEnds, reader: asyncio.StreamReader, deadline: float
    ):
        loop = asyncio.get_running_loop()
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(reader.read(READ_SIZE), max(0.0, deadline - loop.time()))
            if not lines.crlf_only(data):
                raise h11.RemoteProtocolError("every line of a request head must end in CRLF", 400)
            conn.receive_data(data)  # (b"": the client closed; h11 then says ConnectionClosed)

    async def _respond(self, request: Request) -> AnyResponse:
        if len(request.path) + len(request.query_string) > MAX_TARGET_BYTES:
            return error_response(414, "UNSUPPORTED", f"the request target is longer than {MAX_TARGET_BYTES} bytes")
        if sum(len(name) + len(value) + 4 for name, value in request.headers.items()) > MAX_HEAD:
            return error_response(431, "UNSUPPORTED", f"the request headers add up to more than {MAX_HEAD} bytes")
        if not request.path.startswith(LAYERS_PREFIX):
            return error_response(404, "NOT_FOUND", "this listener serves presigned layer URLs (/layers/) only")
        try:
            return await self.handle(request)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, loggable_path(request.path))
            return error_response(500, "UNKNOWN", "internal error — see the server log")

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: AnyResponse, head: bool, close: bool,
        sent: _Sent,
    ) -> bool:
        """Send ``response``, counting its body bytes in ``sent`` as they go; False: its file is gone, nothing was
        sent."""
        try:
            if head or isinstance(response, Response):
                assert not isinstance(response, (StreamResponse, FileResponse)) or head
                await self._send_simple(conn, writer, response, head, close, sent)
                return True
            if isinstance(response, FileResponse):
                return await self._send_file(conn, writer, response, close, sent)
            await self._send_stream(conn, writer, response, close, sent)
            return True
        finally:
            if isinstance(response, StreamResponse) and response.close is not None:
                response.close()

    async def _send_simple(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: AnyResponse, head: bool, close: bool,
        sent: _Sent,
    ) -> None:
        body = response.body if isinstance(response, Response) else b""
        headers = dict(response.headers)
        if isinstance(response, Response) and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        writer.write(conn.send(_head(response.status, headers, close)) or b"")
        if not head and body:
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        sent.n = 0 if head else len(body)

    async def _send_file(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: FileResponse, close: bool, sent: _Sent
    ) -> bool:
        try:
            file: BinaryIO = open(response.path, "rb")  # noqa: SIM115 — closed below, after the sendfile
        except FileNotFoundError:  # evicted from the cache between the handler's look and now
            return False
        with file:
            headers = {**response.headers, "Content-Length": str(response.length)}
            writer.write(conn.send(_head(response.status, headers, close)) or b"")
            if not response.length:
                conn.send(h11.EndOfMessage())
                await writer.drain()
                return True
            # h11 counts the body against its Content-Length; the kernel sends it
            conn.send_with_data_passthrough(h11.Data(data=_Length(response.length)))  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            try:
                sent.n = await loop.sendfile(writer.transport, file, response.start, response.length)
            except BaseException:  # cut off: asyncio left the file where the kernel's copy stopped
                sent.n = max(0, file.tell() - response.start)
                raise
            if sent.n != response.length:
                raise ConnectionError(f"the file ended after {sent.n} of {response.length} bytes")
            conn.send(h11.EndOfMessage())
            return True

    async def _send_stream(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: StreamResponse, close: bool, sent: _Sent
    ) -> None:
        """A body read through Python (a blob not in the plaintext cache): sent piece by piece; on an error after
        the status went out, the connection is cut, never the body completed with something else."""
        writer.write(conn.send(_head(response.status, response.headers, close)) or b"")
        body = response.body
        try:
            async for piece in body:
                writer.write(conn.send(h11.Data(data=piece)) or b"")
                sent.n += len(piece)
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        except (ConnectionError, TimeoutError):  # the client gone, or cut off for reading nothing (TCP_USER_TIMEOUT)
            raise
        except Exception as exc:
            log.exception("could not produce the rest of a layer download (%d bytes sent); cutting it off", sent.n)
            raise ConnectionError("body failed") from exc
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()


class _Sent:
    """The body bytes of an answer that went out so far (up to where it was cut off)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _LineEnds:
    """Whether a connection's bytes end every line in CRLF. h11 also ends a line at a bare LF, where a front proxy
    may see the line go on (a header it hides, a request it does not see: request smuggling); RFC 9112 §2.2 lets a
    server refuse a bare LF and a bare CR. Every byte fed to h11 on this listener is a request head (a request with
    a body is refused and its connection closed), so the check is three counts in C per read, not a parse: every LF
    after a CR and every CR before an LF, across reads."""

    __slots__ = ("_cr",)

    def __init__(self) -> None:
        self._cr = False  # the last read ended in a CR: the next must begin with its LF

    def crlf_only(self, data: bytes) -> bool:
        if not data:
            return True
        if self._cr:
            if data[0] != 0x0A:
                return False
            data = data[1:]
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        pairs = data.count(b"\r\n")
        return data.count(b"\n") == pairs and data.count(b"\r") == pairs


class _Length:
    """A body of ``n`` bytes that the kernel sends (h11 only needs its length)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _has_body(event: h11.Request) -> bool:
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
        for name, value in event.headers
    )


def _head(status: int, headers: dict[str, str], close: bool) -> h11.Response:
    items = [(name, value) for name, value in headers.items()]
    if close and "Connection" not in headers:
        items.append(("Connection", "close"))
    return h11.Response(status_code=status, headers=items)


def _request(event: h11.Request, writer: asyncio.StreamWriter) -> Request:
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")
        headers[key] = f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
    return Request(
        event.method.decode("ascii", "replace"),
        unquote(path),
        query,
        headers,
        _address(writer.get_extra_info("peername")),
        _address(writer.get_extra_info("sockname")),
        "http",
        None,
    )


def _address(name) -> str:
    if not name:
        return ""
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
