"""The worst a client without a valid signature (or with a push token) can do to bodies held whole (``POST /``
documents, manifest PUTs), measured: memory, descriptors and threads of the server while it happens, how long the
server keeps such connections, and whether a real client still gets its answers meanwhile.
``python bench/slow_bodies.py [--heads 1000] [--fillers 24] [--trickle 500] [--workers 1]``

Starts ``soko serve`` on a fresh data dir; three rounds, each ``POST /`` (the root's key id, a wrong signature:
it passes every check made before the body) and ``PUT /v2/…/manifests/…`` (the root's registry token) half each:
* heads: ``--heads`` connections declare the largest body allowed (32 MiB, 4 MiB), send one byte and stop;
* fillers: ``--fillers`` connections send all of such a body but its last byte, then stop (what the budget is for);
* trickle: ``--trickle`` connections send a byte every second.
During each round a boto3 ``DescribeRepositories`` and a manifest PUT+GET run every 0.5 s; their outcomes and
slowest time are printed with the server's peak RSS (summed over its processes), open descriptors and threads,
and how long the server kept the attacking connections (each must end in about 10 s: the grace period and the
longest pause of ``soko.http.bodies``). Loopback only, bounded: every round ends after ``--round`` seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO / "src", REPO):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import boto3  # noqa: E402
import httpx  # noqa: E402
from botocore.config import Config  # noqa: E402
from tests.e2e.servers import soko_root_key, start_soko  # noqa: E402
from tests.oci.helpers import OCI_MANIFEST, image_manifest, push_blob  # noqa: E402

from procstat import process_tree, rss_bytes  # noqa: E402

AWS_BODY, MANIFEST_BODY = 32 << 20, 4 << 20
TARGET = "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"
NAME = "bench/slow"


def aws_head(host: str, length: int, key_id: str) -> bytes:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scope = f"{key_id}/{stamp[:8]}/us-east-1/ecr/aws4_request"
    return (
        f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\nX-Amz-Date: {stamp}\r\n"
        f"X-Amz-Target: {TARGET}\r\nContent-Type: application/x-amz-json-1.1\r\n"
        f"Authorization: AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={'0' * 64}"
        "\r\n\r\n"
    ).encode()


def manifest_head(host: str, length: int, authorization: str, tag: str) -> bytes:
    return (
        f"PUT /v2/{NAME}/manifests/{tag} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
        f"Content-Type: {OCI_MANIFEST}\r\nAuthorization: {authorization}\r\n\r\n"
    ).encode()


def fds_and_threads(root: int) -> tuple[int, int]:
    fds = threads = 0
    for pid in process_tree(root):
        try:
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            status = Path(f"/proc/{pid}/status").read_text()
            threads += int(status.split("Threads:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return fds, threads


class Peaks:
    """Samples the server's RSS, descriptors and threads every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss, self.fds, self.threads = pid, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            fds, threads = fds_and_threads(self.pid)
            self.rss, self.fds, self.threads = max(self.rss, rss_bytes(self.pid)), max(self.fds, fds), max(
                self.threads, threads
            )
            time.sleep(0.05)

    def stop(self) -> Peaks:
        self._stop.set()
        self._thread.join()
        return self


class Legit:
    """A real client during the round: boto3 DescribeRepositories and a manifest PUT + GET every 0.5 s."""

    def __init__(self, server, key: dict[str, str], manifest: bytes) -> None:
        self.outcomes: collections.Counter = collections.Counter()
        self.slowest = 0.0
        self._stop = threading.Event()
        self._ecr = boto3.client(
            "ecr", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"], config=Config(retries={"mode": "legacy", "max_attempts": 0}),
        )
        self._http = httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=30)
        self._manifest = manifest
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _timed(self, what: str, call) -> None:
        started = time.monotonic()
        try:
            outcome = call()
        except Exception as exc:
            outcome = type(exc).__name__
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.outcomes[f"{what} {outcome}"] += 1

    def _put(self) -> int:
        headers = {"Content-Type": OCI_MANIFEST}
        return self._http.put(f"/v2/{NAME}/manifests/legit", content=self._manifest, headers=headers).status_code

    def _run(self) -> None:
        while not self._stop.is_set():
            self._timed("DescribeRepositories", lambda: "ok" if self._ecr.describe_repositories() else "?")
            self._timed("manifest PUT", self._put)
            self._timed("manifest GET", lambda: self._http.get(f"/v2/{NAME}/manifests/legit",
                                                               headers={"Accept": OCI_MANIFEST}).status_code)
            self._stop.wait(0.5)

    def stop(self) -> Legit:
        self._stop.set()
        self._thread.join()
        self._http.close()
        return self


def attack(server, heads: list[bytes], prefix: int, every: float | None, seconds: float) -> list[float]:
    """Open a connection per head, send it and ``prefix`` body bytes, then one byte every ``every`` seconds (None:
    nothing more). Returns how long each connection lasted until the server answered or closed it (inf: still open
    at the end of the round)."""
    host, port = server.host.split(":")
    selector = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    lasted: list[float] = []
    filler = b" " * prefix

    def open_one(head: bytes) -> None:
        started = time.monotonic()
        sock = socket.create_connection((host, int(port)), timeout=30)
        try:
            sock.sendall(head + filler)
        except OSError:  # answered (refused) and closed while we were still sending
            lasted.append(time.monotonic() - started)
            sock.close()
            return
        sock.setblocking(False)
        opened[sock] = time.monotonic()
        selector.register(sock, selectors.EVENT_READ)

    if prefix > 1 << 20:  # big prefixes: in parallel, or the first ones finish before the last are sent
        threads = [threading.Thread(target=open_one, args=(h,)) for h in heads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for head in heads:
            open_one(head)
    end = time.monotonic() + seconds
    next_byte = time.monotonic() + (every or seconds)
    while opened and time.monotonic() < end:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            try:
                sock.recv(65536)  # an answer or the end of the connection: the server let go of it
            except OSError:
                pass
            lasted.append(time.monotonic() - opened.pop(sock))
            selector.unregister(sock)
            sock.close()
        if every and time.monotonic() >= next_byte:
            next_byte += every
            for sock in list(opened):
                try:
                    sock.send(b" ")
                except OSError:
                    pass
    lasted += [float("inf")] * len(opened)
    for sock in opened:
        sock.close()
    selector.close()
    return lasted


def report(name: str, count: int, lasted: list[float], peaks: Peaks, legit: Legit, idle: tuple[int, int, int]) -> None:
    held = sorted(t for t in lasted if t != float("inf"))
    median = held[len(held) // 2] if held else 0.0
    outcomes = ", ".join(f"{n}x {what}" for what, n in sorted(legit.outcomes.items()))
    print(
        f"{name}: {count} connections; the server let go of {len(held)} (median {median:.1f} s, last "
        f"{max(held, default=0):.1f} s), {len(lasted) - len(held)} still open at the end; server peak RSS "
        f"{peaks.rss / 1e6:.0f} MB (+{(peaks.rss - idle[0]) / 1e6:.0f}), descriptors {peaks.fds} (idle {idle[1]}), "
        f"threads {peaks.threads} (idle {idle[2]}); real client: {outcomes}; slowest {legit.slowest:.2f} s",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=1000)
    parser.add_argument("--fillers", type=int, default=24)
    parser.add_argument("--trickle", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--round", type=float, default=30.0, help="seconds each round lasts at most")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this client holds thousands of sockets
    with tempfile.TemporaryDirectory(prefix="soko-slow-bodies-") as tmp:
        server = start_soko(Path(tmp) / "data", workers=args.workers)
        try:
            key = soko_root_key(server.data_dir)
            authorization = server.auth_header()["Authorization"]
            with httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=30) as client:
                config, layer = b'{"os":"linux"}', b"a layer"
                push_blob(client, NAME, config)
                push_blob(client, NAME, layer)
            manifest = json.dumps(image_manifest(config, [layer])).encode()
            time.sleep(1)
            idle = (rss_bytes(server.pid), *fds_and_threads(server.pid))
            print(f"workers: {args.workers}; idle RSS {idle[0] / 1e6:.0f} MB, {idle[1]} descriptors, "
                  f"{idle[2]} threads; client descriptor limit {hard}", flush=True)

            def heads(count: int, aws_length: int, manifest_length: int) -> list[bytes]:
                half = count // 2
                return [aws_head(server.host, aws_length, key["AccessKeyId"])] * (count - half) + [
                    manifest_head(server.host, manifest_length, authorization, f"t{i}") for i in range(half)
                ]

            rounds = [
                ("heads (largest body declared, 1 byte sent)", heads(args.heads, AWS_BODY, MANIFEST_BODY), 1, None),
                ("trickle (a byte every second)", heads(args.trickle, 1 << 10, 1 << 10), 1, 1.0),
            ]
            for name, round_heads, prefix, every in rounds:
                peaks, legit = Peaks(server.pid), Legit(server, key, manifest)
                lasted = attack(server, round_heads, prefix, every, args.round)
                report(name, len(round_heads), lasted, peaks.stop(), legit.stop(), idle)
            # Fillers: bodies that arrive all but their last byte, the two kinds separately (different sizes).
            for name, head, size in [
                ("fillers, POST / (32 MiB bodies, all but 1 byte)", aws_head(server.host, AWS_BODY, key["AccessKeyId"]),
                 AWS_BODY),
                ("fillers, manifest PUT (4 MiB bodies, all but 1 byte)",
                 manifest_head(server.host, MANIFEST_BODY, authorization, "f"), MANIFEST_BODY),
            ]:
                peaks, legit = Peaks(server.pid), Legit(server, key, manifest)
                lasted = attack(server, [head] * args.fillers, size - 1, None, args.round)
                report(name, args.fillers, lasted, peaks.stop(), legit.stop(), idle)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
