"""A minimal HTTP/1.1 client on raw sockets: bodies go out with ``sendfile`` or ``sendall`` of big buffers,
so the client is never the bottleneck of an upload (one connection per request, ``Connection: close``)."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

RECV = 1 << 20


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class FileSlice:
    path: Path
    offset: int
    count: int


Body = bytes | FileSlice | Iterable[bytes] | None


def _send_body(sock: socket.socket, body: Body) -> None:
    if body is None:
        return
    if isinstance(body, bytes):
        sock.sendall(body)
    elif isinstance(body, FileSlice):
        with body.path.open("rb") as file:
            sock.sendfile(file, body.offset, body.count)
    else:
        for chunk in body:
            sock.sendall(chunk)


def _read_response(sock: socket.socket) -> Response:
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(RECV)
        if not data:
            raise ConnectionError(f"connection closed before the response headers: {bytes(buffer)!r}")
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(rest)
    length = int(headers["content-length"]) if "content-length" in headers else None
    while length is None or len(body) < length:
        data = sock.recv(RECV)
        if not data:
            break
        body += data
    return Response(status, headers, bytes(body))


def request(host: str, method: str, target: str, *, headers: dict[str, str] | None = None,
            body: Body = None, length: int | None = None, timeout: float = 600) -> Response:
    """Send one request to ``host`` (``ip:port``); ``length`` is required for iterable bodies."""
    if length is None:
        if isinstance(body, bytes):
            length = len(body)
        elif isinstance(body, FileSlice):
            length = body.count
        elif body is None:
            length = 0 if method in ("POST", "PUT", "PATCH") else None
    name, port = host.rsplit(":", 1)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    with socket.create_connection((name, int(port)), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            _send_body(sock, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (an error): read what it said
        return _read_response(sock)


def location_target(location: str) -> str:
    """A ``Location`` header (absolute or relative) as a request target (path + query)."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(target: str, **params: str) -> str:
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())
    return target + ("&" if "?" in target else "?") + query
