"""HTTP/1.1 over a raw socket, for tests that must control exactly which bytes reach the server and when (a head
without its body, a body trickling in or cut off): ``connect`` to a running server, ``answer`` reads one response."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable


def connect(server, timeout: float = 15) -> socket.socket:
    """A fresh connection to ``server`` (anything with ``host`` = "ip:port"); ``timeout`` bounds each read."""
    host, port = server.host.split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """One response: (status, lower-cased headers, body as JSON, or ``{"raw": text}`` when it is not JSON)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"connection closed without an answer: {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        rest += piece
    body = json.loads(rest) if rest.startswith(b"{") else {"raw": rest.decode()}
    return int(lines[0].split()[1]), headers, body


def trickle(sock: socket.socket, every: float | None, limit: int = 50) -> None:
    """Send one more body byte every ``every`` seconds until the server answers (``None``: send nothing more)."""
    if every:
        sock.settimeout(every)
        for _ in range(limit):
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # answered
            except TimeoutError:
                sock.sendall(b" ")
        sock.settimeout(15)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
