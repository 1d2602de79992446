"""A real webhook receiver on loopback: records every POST (headers, body, the client's port), keeps connections
alive (HTTP/1.1) as real receivers do, can answer errors, hang, or be down (then it closes every connection too)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200  # what it answers
        self.hold: threading.Event | None = None  # set: requests wait for it before answering
        self.arrived = threading.Condition()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                receiver._connections.add(self.connection)

            def finish(self) -> None:
                receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "at": time.time(),
                            "client_port": self.client_address[1],
                        }
                    )
                    receiver.arrived.notify_all()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until ``start`` again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for connection in list(self._connections):  # kept-alive connections end too: really down
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            assert self._thread is not None
            self._thread.join(10)
            self._server = None

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def wait_until(self, predicate, timeout: float = 20.0) -> bool:
        """Until ``predicate(self)`` holds after an arrival (or ``timeout``)."""
        with self.arrived:
            return self.arrived.wait_for(lambda: predicate(self), timeout)

    def events(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]

    def unique_events(self) -> list[dict]:
        """What a receiver that dedupes by event id keeps, in arrival order."""
        seen: set[str] = set()
        out = []
        for event in self.events():
            if event["id"] not in seen:
                seen.add(event["id"])
                out.append(event)
        return out


def verify(request: dict, secret: str) -> bool:
    """The documented check: HMAC-SHA256 of ``<timestamp>.<body>`` with the target's secret."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    timestamp = headers["x-soko-timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-soko-signature-256"], "sha256=" + mac)
