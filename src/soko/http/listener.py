"""Serving an RSGI app with granian on sockets Soko binds itself, inside a running asyncio loop.

granian's own servers bind their socket and own the process model; Soko needs several listeners per process (the
public one and one per private endpoint, told apart by local address) and its own workers (forked after the schema
is ready, each with its own database connections and upkeep). So each worker runs granian's Rust RSGI worker on
each of its sockets, as ``granian.server.embed`` does for one socket. This module is the only one that touches
granian's internals; granian's version is pinned in pyproject.toml because those internals are not a stable API.

Idle connections: granian's ``backpressure`` is a semaphore of *connections* per socket (a permit is taken before
``accept`` and held until the connection closes), not of requests. Its default would let ~1,000 clients that connect
and send nothing stop a worker from accepting anyone else; so the limit follows the descriptor limit instead (which
``raise_open_files_limit`` lifts to the hard limit at start), keeping a reserve for blobs, the database and logs so
``accept`` never fails for want of descriptors. Connections that never complete a request head are closed after
``keepalive_timeout`` (hyper's header-read timeout starts when it waits for a head: on connect and between
keep-alive requests, which granian cannot tell apart); beyond the limit, new connections wait in the kernel's
accept queue until a slot frees.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
from typing import Any

from granian import _granian
from granian._futures import _future_watcher_wrapper, _new_cbscheduler
from granian._granian import WorkerSignal
from granian.http import HTTP1Settings, HTTP2Settings

from soko.http.rsgi import RsgiApp
from soko.http.tls import TlsFiles

log = logging.getLogger("soko.server")
BACKLOG = 1024
# How long a connection may wait for its next request head (hyper's header-read timeout: on connect and between
# keep-alive requests alike). It must outlast the idle timeouts of clients' connection pools and of load balancers
# in front — Go's transport (skopeo, docker, containerd) keeps idle connections 90 s, AWS ALB 60 s — or the server
# closes a pooled connection just as the client reuses it, and a streamed PATCH fails without an answer (issue 9).
# Idle connections are bounded by the connection limit below, not by this timeout.
DEFAULT_KEEPALIVE_TIMEOUT = 120.0
_NO_TLS: tuple = (False, None, None, None, "tls13", None, [], False)
# granian's private worker API, as its compiled extension takes it: the bundled _granian.pyi lags behind the code
# (it lists neither the IPC argument nor serve_async), so these are left untyped.
RSGIWorker: Any = _granian.RSGIWorker
SocketHolder: Any = _granian.SocketHolder


def _tls(files: TlsFiles | None) -> tuple:
    """granian's TLS arguments: (enabled, cert, key, key password, minimum version, client CA, CRLs, verify clients).
    TLS 1.2 and up, as ECR's endpoints accept."""
    return _NO_TLS if files is None else (True, files.cert, files.key, None, "tls1.2", None, [], False)


class Listeners:
    """granian workers serving ``app`` on ``sockets`` in the current event loop until ``close()``; with ``tls``,
    HTTPS, offering HTTP/2 and HTTP/1.1 by ALPN (HTTP/2 carries the host as :authority, which the RSGI adapter
    turns back into the Host that routing and SigV4 read)."""

    def __init__(
        self,
        app: RsgiApp,
        sockets: list[socket.socket],
        worker_id: int = 1,
        tls: TlsFiles | None = None,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        shares: int | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        callback = _future_watcher_wrapper(app)
        self._signals: list[WorkerSignal] = []
        # (shares: how many parts the descriptor budget is cut into: one per socket, and more for the data listener)
        self.max_connections = connection_limit(shares or len(sockets))
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
                self.max_connections,  # "backpressure": connections open at once on this socket (see above)
                # Plain text: HTTP/1.1 only (nothing asks for h2c, and it would skip the Host checks of HTTP/1.1).
                "auto" if tls else "1",
                HTTP1Settings(header_read_timeout=int(keepalive_timeout * 1000), keep_alive=True),
                HTTP2Settings() if tls else None,
                False,  # websockets
                None,  # static files
                *_tls(tls),
                (None, None),
            )
            worker.serve_async(_new_cbscheduler(loop, callback, impl_asyncio=True), loop, signal)
            self._signals.append(signal)

    def close(self) -> None:
        """Stop accepting connections; requests in flight go on (``RsgiApp.drain`` waits for them)."""
        for signal in self._signals:
            signal.set()
        self._signals = []


def raise_open_files_limit() -> int:
    """Lift this process's soft descriptor limit to its hard limit (often 1,024 → 500,000+); returns the soft limit.
    Each open connection costs a descriptor; Soko's own use (blobs, database, logs) is small and bounded."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError) as exc:  # e.g. an infinite hard limit above the kernel's nr_open
        log.warning("could not raise the open-files limit from %d to %d (%s): each worker keeps at most %d "
                    "connections open; raise it with `ulimit -n`", soft, hard, exc, connection_limit(1))
        return soft


def connection_limit(sockets: int, open_files: int | None = None) -> int:
    """Connections each worker keeps open per listening socket: the descriptor limit less a reserve (a quarter,
    at most 1,024) for everything else a worker opens, shared between its sockets."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files == resource.RLIM_INFINITY:
        open_files = 1 << 20
    return max(64, (open_files - min(1024, open_files // 4)) // max(1, sockets))
