"""Idle-connection flood (issue 11, item 1): N connections that never send a byte, re-opened as the server closes
them, while authenticated pulls and a health probe are timed.
``python bench/idle_connections.py [--connections 5000] [--seconds 60] [--workers 1]``

Starts ``soko serve`` on a fresh data dir, pushes a small image, opens the idle connections (a thread keeps the
count up: each one the server closes — after its header-read timeout — is replaced), then once per ``--interval``
runs a probe round: ``GET /healthz`` (``GET /v2/`` while that route does not exist), the manifest by tag and its
layer, each on a fresh connection as a new client would. Prints idle connections held (min/median over the run),
probes answered within 1 s / total, latency p50/max, and the server's descriptors and summed RSS. Exit 1 when any
probe failed or took longer than 1 s. Not part of the tests (``tests/e2e/test_idle_connections.py`` is the bounded
version).
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO / "src", REPO):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx  # noqa: E402
from tests.e2e.servers import start_soko  # noqa: E402

from http1 import request  # noqa: E402
from ops import Target, push_small_image  # noqa: E402
from procstat import process_tree, rss_bytes  # noqa: E402


class IdleFlood(threading.Thread):
    """Holds ``count`` idle connections to ``address``, replacing each one the server closes."""

    def __init__(self, address: tuple[str, int], count: int) -> None:
        super().__init__(daemon=True)
        self.address, self.count = address, count
        self.selector = selectors.DefaultSelector()
        self.open = 0
        self.reopened = 0
        self.failures = 0
        self.stopping = threading.Event()

    def _connect(self) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=5)
        except OSError:
            self.failures += 1
            return
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ)
        self.open += 1

    def run(self) -> None:
        while not self.stopping.is_set():
            while self.open < self.count and not self.stopping.is_set():
                self._connect()
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                self.selector.unregister(sock)
                sock.close()  # type: ignore[union-attr]
                self.open -= 1
                self.reopened += 1
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def probe(host: str, headers: dict[str, str], path: str, accept: str | None = None) -> tuple[bool, float]:
    """One GET on a new connection, as a new client would, timed from connect to the end of the body."""
    start = time.monotonic()
    try:
        response = request(host, "GET", path, headers={**headers, **({"Accept": accept} if accept else {})},
                           timeout=5)
        ok = response.status == 200
    except OSError:
        ok = False
    return ok, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 512:
        sys.exit(f"this shell's hard open-files limit ({hard}) cannot hold {args.connections} client sockets")
    with tempfile.TemporaryDirectory(prefix="soko-idle-") as tmp:
        server = start_soko(Path(tmp) / "data", workers=args.workers)
        try:
            return run(server, args)
        finally:
            server.stop()


def run(server, args) -> int:
    target = Target(server.host, server.auth_header())
    digest = push_small_image(target, "bench/idle", "v1")
    with httpx.Client(base_url=server.url, headers=server.auth_header()) as client:
        layer = client.get(f"/v2/bench/idle/manifests/{digest}").json()["layers"][0]["digest"]
        health = "/healthz" if client.get("/healthz").status_code == 200 else "/v2/"
    probes = [
        (health, None),
        ("/v2/bench/idle/manifests/v1", "application/vnd.oci.image.manifest.v1+json"),
        (f"/v2/bench/idle/blobs/{layer}", None),
    ]
    host, port = server.host.split(":")
    flood = IdleFlood((host, int(port)), args.connections)
    flood.start()
    while flood.open < args.connections and flood.failures == 0:
        time.sleep(0.1)
    print(f"{flood.open} idle connections open ({flood.failures} connect failures)", file=sys.stderr)
    held: list[int] = []
    results: list[tuple[str, bool, float]] = []
    fds = rss = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        held.append(flood.open)
        for path, accept in probes:
            ok, took = probe(server.host, server.auth_header(), path, accept)
            results.append((path, ok, took))
        pids = process_tree(server.pid)
        fds = max(fds, sum(len(list(Path(f"/proc/{pid}/fd").iterdir())) for pid in pids))
        rss = max(rss, rss_bytes(server.pid))
        time.sleep(args.interval)
    flood.stopping.set()
    flood.join()
    answered = sum(1 for _, ok, took in results if ok and took <= 1.0)
    latencies = sorted(took for _, ok, took in results if ok)
    print(f"workers: {args.workers}")
    print(f"idle connections held: min {min(held)}, median {int(statistics.median(held))} of {args.connections} "
          f"({flood.reopened} re-opened after the server closed them, {flood.failures} connect failures)")
    print(f"probes ({health}, manifest by tag, layer blob) answered within 1 s: {answered} of {len(results)}")
    if latencies:
        print(f"probe latency: p50 {statistics.median(latencies) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    print(f"server: up to {fds} descriptors, up to {rss / 1e6:.0f} MB summed RSS")
    return 0 if answered == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
