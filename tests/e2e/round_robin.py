"""Round-robin clients for a cluster of Soko nodes.

:class:`RoundRobinProxy` is a layer-4 load balancer for tests (as haproxy's ``balance roundrobin`` in TCP mode or an
AWS NLB): each new TCP connection goes to the next node in turn, bytes pass through untouched. External clients
(skopeo, the AWS CLI) talk to its one address. :class:`RoundRobin` spreads in-process SDK calls: each call goes
to the next node's client, so consecutive calls of one sequence land on different nodes.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any


class RoundRobinProxy:
    def __init__(self, backends: Sequence[str]) -> None:
        self.backends = list(backends)  # "127.0.0.1:PORT"
        self.connections: Counter[str] = Counter()  # per backend: how many connections it was given
        self._turn = itertools.cycle(self.backends)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="round-robin-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock)
            self._ready.set()

        self._loop.run_until_complete(serve())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend = next(self._turn)
        self.connections[backend] += 1
        host, port = backend.rsplit(":", 1)
        try:
            node_reader, node_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, node_writer), _pipe(node_reader, client_writer))
        node_writer.close()
        client_writer.close()

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies one direction until EOF, then half-closes, so a request body's end reaches the node."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()  # a reset: the other direction ends too


class RoundRobin:
    """Any method call goes to the next of ``clients`` (boto3 clients of the same service, one per node);
    ``calls`` records which node (its index) served each call, in order."""

    def __init__(self, clients: Sequence[Any]) -> None:
        self._clients = list(clients)
        self._turn = itertools.cycle(range(len(self._clients)))
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            index = next(self._turn)
            self.calls.append((name, index))
            return getattr(self._clients[index], name)(*args, **kwargs)

        return call

    @property
    def exceptions(self) -> Any:
        return self._clients[0].exceptions
