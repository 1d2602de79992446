"""The RSGI adapter: granian's scope and protocol in, Soko's Request; Soko's responses out.

RSGI (granian's Rust-native interface) is what lets a Python registry answer small requests at Go-like cost: the
HTTP parsing, header maps and file sending stay in Rust (hyper/tokio), and a handler's response is one call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from soko.http import piped
from soko.http.access_log import loggable_path
from soko.http.messages import AnyResponse, FileResponse, Request, Response, StreamResponse, error_response, report_sent

log = logging.getLogger("soko.http")

# Limits on what a request line and its headers may hold (Distribution/Go allow 1 MiB of headers; nginx 8 to 32 KiB).
MAX_TARGET_BYTES = 8192
MAX_HEADER_BYTES = 16384

Handler = Callable[[Request], Awaitable[AnyResponse]]


# Called once a response is over: (request, status, response body bytes sent, start and end perf_counter times).
Observer = Callable[[Request, int, int, float, float], None]


class RsgiApp:
    """One RSGI application over Soko's handler; it also counts requests in flight so shutdown can wait for them,
    and hands each finished request to ``observe`` (the access log and request metrics)."""

    def __init__(self, handle: Handler, observe: Observer | None = None) -> None:
        self.handle = handle
        self.observe = observe
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    async def __call__(self, scope, protocol) -> None:
        if scope.proto != "http":
            return  # websockets: not part of any registry protocol
        started = time.perf_counter()
        self.in_flight += 1
        head = scope.method == "HEAD"
        request = Request(
            scope.method,
            scope.path,
            scope.query_string,
            scope.headers,
            scope.client,
            scope.server,
            scope.scheme,
            protocol,
        )
        if scope.http_version == "2" and "host" not in scope.headers:
            request.authority = scope.authority or ""  # HTTP/2 names the host in :authority, not Host
        status, sent = 500, 0
        response: AnyResponse | None = None
        try:
            response = self._refuse_oversize(scope)
            if response is None:
                try:
                    response = await self.handle(request)
                except Exception:
                    log.exception("unexpected error on %s %s", scope.method, loggable_path(scope.path))
                    response = error_response(500, "UNKNOWN", "internal error — see the server log")
            status = response.status
            # A body left (partly) unread leaves the connection mid-request: hyper closes it after the answer, and a
            # client that was not told so would send its next request into a closing socket ("server disconnected
            # without sending a response"). Say so, as RFC 9112 §9.6 asks.
            unread = request.has_body and not request.body_complete and scope.http_version.startswith("1")
            sent = await _send(protocol, response, head, close=unread)
        finally:
            report_sent(response, sent)
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()
            if self.observe is not None:
                try:
                    self.observe(request, status, sent, started, time.perf_counter())
                except Exception:  # bookkeeping must never turn into a failed request
                    log.exception("could not record request %s %s", scope.method, loggable_path(scope.path))

    @staticmethod
    def _refuse_oversize(scope) -> Response | None:
        if len(scope.path) + len(scope.query_string) > MAX_TARGET_BYTES:
            return error_response(414, "UNSUPPORTED", f"the request target is longer than {MAX_TARGET_BYTES} bytes")
        size = 0
        for name, value in scope.headers.items():
            size += len(name) + len(value) + 4
        if size > MAX_HEADER_BYTES:
            message = f"the request headers add up to more than {MAX_HEADER_BYTES} bytes"
            return error_response(431, "UNSUPPORTED", message)
        return None

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (True) or ``timeout`` seconds pass (False)."""
        if self.in_flight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


async def _send(protocol, response: AnyResponse, head: bool, close: bool = False) -> int:
    """Send ``response`` (with ``Connection: close`` when ``close``); returns the body bytes sent."""
    headers = list(response.headers.items())
    if close and "Connection" not in response.headers:
        headers.append(("Connection", "close"))
    try:
        if head:  # never a body, whatever the handler built
            if isinstance(response, Response) and response.body and "Content-Length" not in response.headers:
                headers.append(("Content-Length", str(len(response.body))))
            protocol.response_empty(response.status, headers)
            return 0
        if isinstance(response, StreamResponse):
            return await _send_stream(protocol, response, headers)
        if isinstance(response, FileResponse):
            if not response.length:  # (granian refuses an empty range)
                protocol.response_empty(response.status, headers)
                return 0
            end = response.start + response.length
            protocol.response_file_range(response.status, headers, response.path, response.start, end)
            return response.length
        if response.body:
            protocol.response_bytes(response.status, headers, response.body)
            return len(response.body)
        protocol.response_empty(response.status, headers)
        return 0
    finally:
        if isinstance(response, StreamResponse) and response.close is not None:
            response.close()


def _length(response: StreamResponse) -> int:
    try:
        return int(response.headers.get("Content-Length", -1))
    except ValueError:
        return -1


async def _send_stream(protocol, response: StreamResponse, headers: list[tuple[str, str]]) -> int:
    if _length(response) >= piped.MIN_BODY and piped.available():
        # granian's stream transport queues without bound: a large body goes through a pipe (soko.http.piped)
        try:
            pipe = piped.Pipe()
        except OSError as exc:  # (out of descriptors: queued as before rather than refused)
            log.warning("could not make a pipe for a response body, sending it queued: %s", exc)
        else:
            return await _send_piped(protocol, response, headers, pipe)
    transport = protocol.response_stream(response.status, headers)
    body = response.body
    sent = 0
    try:
        async for piece in body:
            await transport.send_bytes(piece)
            sent += len(piece)
    except (ConnectionError, RuntimeError) as exc:  # the client went away (granian's RSGIProtocolClosed)
        log.debug("response body interrupted after %d bytes: %s", sent, exc)
    except Exception as exc:  # the status went out already: all we can do is cut the body short, and say why
        log.exception("could not produce the rest of a response body (%d bytes sent); the client sees it cut off", sent)
        # granian ends the connection when it frees the transport: the traceback holds this frame (and so the
        # transport), and the error is often in a reference cycle (a fetch keeps its error for its followers), so
        # without this the client would wait until the garbage collector ran, or until its own timeout
        exc.__traceback__ = None
    finally:
        aclose = getattr(body, "aclose", None)  # an async generator: run its finally blocks now
        if aclose is not None:
            await aclose()
    return sent


async def _send_piped(protocol, response: StreamResponse, headers: list[tuple[str, str]], pipe: piped.Pipe) -> int:
    """The body written into ``pipe``, which granian sends as a file with the response's Content-Length: a body that
    ends short of it (an error, or the client gone) is cut off, never completed."""
    body = response.body
    writer = piped.claim_writer() if response.source is not None else None
    try:
        protocol.response_file(response.status, headers, pipe.path)
        if writer is not None:
            await piped.copy(pipe, response.source, _length(response), writer)
        else:
            await piped.pump(pipe, body)
    except ConnectionError as exc:  # the client went away: granian closed its end of the pipe
        log.debug("response body interrupted after %d bytes: %s", pipe.written, exc)
    except Exception:  # the status went out already: all we can do is cut the body short, and say why
        log.exception("could not produce the rest of a response body (%d bytes sent); the client sees it cut off",
                      pipe.written)
    finally:
        if writer is not None:
            writer.release()
        pipe.close()
        aclose = getattr(body, "aclose", None)  # an async generator: run its finally blocks now
        if aclose is not None:
            await aclose()
    return pipe.written
