"""Serving an RSGI app with granian on sockets Soko binds itself, inside a running asyncio loop.

granian's own servers bind their socket and own the process model; Soko needs several listeners per process (the
public one and one per private endpoint, told apart by local address) and its own workers (forked after the schema
is ready, each with its own database connections and upkeep). So each worker runs granian's Rust RSGI worker on
each of its sockets, as ``granian.server.embed`` does for one socket. This module is the only one that touches
granian's internals; granian's version is pinned in pyproject.toml because those internals are not a stable API.
"""

from __future__ import annotations

import asyncio
import os
import socket

from granian._futures import _future_watcher_wrapper, _new_cbscheduler
from granian._granian import RSGIWorker, SocketHolder, WorkerSignal
from granian.http import HTTP1Settings

from soko.http.rsgi import RsgiApp

BACKLOG = 1024
_NO_TLS = (False, None, None, None, "tls13", None, [], False)


class Listeners:
    """granian workers serving ``app`` on ``sockets`` in the current event loop until ``close()``."""

    def __init__(self, app: RsgiApp, sockets: list[socket.socket], worker_id: int = 1) -> None:
        loop = asyncio.get_running_loop()
        callback = _future_watcher_wrapper(app)
        self._signals: list[WorkerSignal] = []
        for sock in sockets:
            signal = WorkerSignal()
            worker = RSGIWorker(
                worker_id,
                (None, SocketHolder(os.dup(sock.fileno()), False, BACKLOG)),  # granian closes its copy
                None,  # no IPC with a granian supervisor
                1,  # Rust runtime threads (HTTP parsing and socket I/O)
                512,  # Rust blocking threads (granian's default)
                1,  # Python threads of granian's own (RSGI handlers run on our loop)
                30,  # their idle timeout (s)
                BACKLOG,  # backpressure: requests in flight per worker
                "1",  # HTTP/1.1: plain-text HTTP/2 (h2c) carries no Host header, which routing and SigV4 need
                HTTP1Settings(keep_alive=True),
                None,
                False,  # websockets
                None,  # static files
                *_NO_TLS,
                (None, None),
            )
            worker.serve_async(_new_cbscheduler(loop, callback, impl_asyncio=True), loop, signal)
            self._signals.append(signal)

    def close(self) -> None:
        """Stop accepting connections; requests in flight go on (``RsgiApp.drain`` waits for them)."""
        for signal in self._signals:
            signal.set()
        self._signals = []
