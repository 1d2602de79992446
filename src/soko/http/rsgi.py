"""The RSGI adapter: granian's scope and protocol in, Soko's Request; Soko's responses out.

RSGI (granian's Rust-native interface) is what lets a Python registry answer small requests at Go-like cost: the
HTTP parsing, header maps and file sending stay in Rust (hyper/tokio), and a handler's response is one call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from soko.http.messages import AnyResponse, Request, Response, StreamResponse

log = logging.getLogger("soko.http")

# Limits on what a request line and its headers may hold (Distribution/Go allow 1 MiB of headers; nginx 8 to 32 KiB).
MAX_TARGET_BYTES = 8192
MAX_HEADER_BYTES = 16384

Handler = Callable[[Request], Awaitable[AnyResponse]]


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return Response(status, {"Docker-Distribution-API-Version": "registry/2.0"}, body, "application/json")


class RsgiApp:
    """One RSGI application over Soko's handler; it also counts requests in flight so shutdown can wait for them."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    async def __call__(self, scope, protocol) -> None:
        if scope.proto != "http":
            return  # websockets: not part of any registry protocol
        self.in_flight += 1
        head = scope.method == "HEAD"
        try:
            response = self._refuse_oversize(scope)
            if response is None:
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
                try:
                    response = await self.handle(request)
                except Exception:
                    log.exception("unexpected error on %s %s", scope.method, scope.path[:200])
                    response = _error(500, "UNKNOWN", "internal error — see the server log")
            await _send(protocol, response, head)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    @staticmethod
    def _refuse_oversize(scope) -> Response | None:
        if len(scope.path) + len(scope.query_string) > MAX_TARGET_BYTES:
            return _error(414, "UNSUPPORTED", f"the request target is longer than {MAX_TARGET_BYTES} bytes")
        size = 0
        for name, value in scope.headers.items():
            size += len(name) + len(value) + 4
        if size > MAX_HEADER_BYTES:
            return _error(431, "UNSUPPORTED", f"the request headers add up to more than {MAX_HEADER_BYTES} bytes")
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


async def _send(protocol, response: AnyResponse, head: bool) -> None:
    headers = list(response.headers.items())
    if isinstance(response, Response):
        if head or not response.body:
            if head and response.body and "Content-Length" not in response.headers:
                headers.append(("Content-Length", str(len(response.body))))
            protocol.response_empty(response.status, headers)
        else:
            protocol.response_bytes(response.status, headers, response.body)
    else:
        await _send_stream(protocol, response, head, headers)


async def _send_stream(protocol, response: StreamResponse, head: bool, headers: list[tuple[str, str]]) -> None:
    body = response.body
    try:
        if head:
            protocol.response_empty(response.status, headers)
            return
        transport = protocol.response_stream(response.status, headers)
        async for piece in body:
            await transport.send_bytes(piece)
    except (ConnectionError, RuntimeError) as exc:  # the client went away mid-body
        log.debug("response body interrupted: %s", exc)
    finally:
        await body.aclose()
