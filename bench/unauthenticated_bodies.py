"""Bodies the AWS front door should not hold (issue 11, item 3): N concurrent ``POST /`` requests of S MiB each that
can never authenticate, then M bodies trickling a byte every few seconds.
``python bench/unauthenticated_bodies.py [--bodies 20] [--mib 31] [--trickle 400] [--workers 1]``

Starts ``soko serve`` on a fresh data dir and samples the summed RSS of its processes every 20 ms while, for each
kind of caller — no Authorization header, an unknown access key, the root's key id with a wrong signature (which
passes every check before the body) — ``--bodies`` clients send a ``--mib`` MiB body at once. Prints the peak RSS
over the idle baseline and how each request was answered. Then ``--trickle`` connections send a request head with a
1 KiB Content-Length and one byte every ``--every`` seconds: prints how long the server kept them. Not part of the
tests (``tests/aws/test_front_door_bodies.py`` is the bounded version).
"""

from __future__ import annotations

import argparse
import collections
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

from tests.e2e.servers import soko_root_key, start_soko  # noqa: E402

from procstat import rss_bytes  # noqa: E402

TARGET = "AmazonEC2ContainerRegistry_V20150921.UploadLayerPart"


def head(host: str, length: int, authorization: str | None) -> bytes:
    now = time.gmtime()
    lines = [
        "POST / HTTP/1.1", f"Host: {host}", f"Content-Length: {length}", f"X-Amz-Target: {TARGET}",
        "Content-Type: application/x-amz-json-1.1", "X-Amz-Date: " + time.strftime("%Y%m%dT%H%M%SZ", now),
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def signature(key_id: str) -> str:
    scope = f"{key_id}/{time.strftime('%Y%m%d', time.gmtime())}/us-east-1/ecr/aws4_request"
    return f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={'0' * 64}"


def send_body(host: str, authorization: str | None, size: int, outcomes: collections.Counter) -> None:
    address = host.split(":")
    chunk = b"A" * (1 << 20)
    sock = socket.create_connection((address[0], int(address[1])), timeout=60)
    try:
        sock.sendall(head(host, size, authorization))
        sent = 0
        try:
            while sent < size:
                sent += sock.send(chunk[: min(len(chunk), size - sent)])
        except OSError:
            pass  # the server answered and closed without reading the rest
        status = sock.recv(4096).split(b" ", 2)[1].decode()
        outcomes[f"HTTP {status} after {'the whole body' if sent >= size else f'{sent >> 20} MiB sent'}"] += 1
    except (OSError, IndexError) as exc:
        outcomes[f"no answer ({type(exc).__name__})"] += 1
    finally:
        sock.close()


def flood(server, authorization: str | None, bodies: int, size: int) -> tuple[int, collections.Counter]:
    outcomes: collections.Counter = collections.Counter()
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(server.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = [threading.Thread(target=send_body, args=(server.host, authorization, size, outcomes))
               for _ in range(bodies)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    time.sleep(0.5)
    done.set()
    sampler.join()
    return peak[0], outcomes


def trickle(server, count: int, every: float, authorization: str) -> list[float]:
    address = server.host.split(":")
    socks = []
    for _ in range(count):
        sock = socket.create_connection((address[0], int(address[1])), timeout=5)
        sock.sendall(head(server.host, 1024, authorization))
        sock.setblocking(False)
        socks.append((sock, time.monotonic()))
    lasted: list[float] = []
    deadline = time.monotonic() + 120
    next_byte = time.monotonic() + every
    while socks and time.monotonic() < deadline:
        time.sleep(0.1)
        send = time.monotonic() >= next_byte
        if send:
            next_byte += every
        for item in list(socks):
            sock, opened = item
            try:
                sock.recv(65536)  # an answer (408) or the end of the connection: the server let go of it
            except BlockingIOError:
                pass  # still waiting for our body
            except OSError:
                pass  # reset: let go too
            else:
                lasted.append(time.monotonic() - opened)
                socks.remove(item)
                sock.close()
                continue
            if send:
                try:
                    sock.send(b" ")
                except OSError:
                    pass
    lasted += [float("inf")] * len(socks)
    for sock, _ in socks:
        sock.close()
    return lasted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--mib", type=int, default=31)
    parser.add_argument("--trickle", type=int, default=400)
    parser.add_argument("--every", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soko-bodies-") as tmp:
        server = start_soko(Path(tmp) / "data", workers=args.workers)
        try:
            key_id = soko_root_key(server.data_dir)["AccessKeyId"]
            time.sleep(1)
            baseline = rss_bytes(server.pid)
            print(f"workers: {args.workers}; idle RSS {baseline / 1e6:.0f} MB")
            for label, authorization in [
                ("no Authorization header", None),
                ("unknown access key", signature("AKIAUNKNOWN000000000")),
                ("root's key id, wrong signature", signature(key_id)),
            ]:
                peak, outcomes = flood(server, authorization, args.bodies, args.mib << 20)
                answers = ", ".join(f"{n}x {what}" for what, n in sorted(outcomes.items()))
                print(f"{args.bodies}x {args.mib} MiB, {label}: peak RSS {peak / 1e6:.0f} MB "
                      f"(+{(peak - baseline) / 1e6:.0f} MB); {answers}")
            if args.trickle:
                lasted = trickle(server, args.trickle, args.every, signature(key_id))
                held = [t for t in lasted if t != float("inf")]
                print(f"{args.trickle} bodies trickling a byte every {args.every:.0f} s: "
                      f"{len(held)} closed by the server, the last after {max(held, default=0):.1f} s; "
                      f"{len(lasted) - len(held)} still open after 120 s")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
