"""Large streamed bodies, sent by granian's stream transport (queued without bound) against a pipe (soko.http.piped),
side by side in one run on loopback:

* ``before`` — Soko at ``--before-ref`` (default: the commit before the pipe), run from a git worktree;
* ``after`` — this Soko.

Both with the plaintext blob cache off, so every pull decrypts (AES256) and streams. Each round pulls one
``--mib`` blob from each (curl, in a shuffled order) and reports the server's CPU seconds per GB (its process tree,
from /proc); then one slow pull per server (a raw socket reading ``--slow-rate`` MB/s) reports how much the server's
resident memory grew meanwhile.
With ``--fill`` the cache is on but not filled by pushes: each round pulls a new blob, which the pull decrypts and
puts in the cache (a node's first pull of a blob).
``python bench/streamed_bodies.py [--mib 256] [--rounds 5] [--slow-mib 128] [--slow-rate 20] [--fill]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests.e2e.servers import RegistryServer, start_soko  # noqa: E402

from ops import Target, make_blob_file, pull_blob, push_monolithic  # noqa: E402
from procstat import RssSampler, cpu_seconds, rss_bytes  # noqa: E402
from run import log, random_data  # noqa: E402

MiB = 1 << 20
BEFORE = "fd83214"  # the last commit whose streamed bodies all went through granian's queue


def _slow_pull(server: RegistryServer, repo: str, digest: str, size: int, rate: float) -> int:
    """Pull ``size`` bytes at ``rate`` bytes/s through a small receive buffer; the server's peak RSS growth."""
    host, port = server.host.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        auth = "".join(f"{k}: {v}\r\n" for k, v in server.auth_header().items())
        sock.sendall(f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {server.host}\r\n{auth}\r\n".encode())
        baseline = rss_bytes(server.pid)
        with RssSampler(server.pid) as sampler:
            buffer = memoryview(bytearray(64 * 1024))
            received, started = 0, time.monotonic()
            head = b""
            while received < size:
                n = sock.recv_into(buffer)
                if not n:
                    raise OSError(f"the server closed the connection after {received} body bytes")
                if head is not None:
                    head += bytes(buffer[:n])
                    if b"\r\n\r\n" not in head:
                        continue
                    n = len(head.partition(b"\r\n\r\n")[2])
                    head = None  # type: ignore[assignment]
                received += n
                ahead = received / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    return sampler.peak_rss - baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slow-mib", type=int, default=128)
    parser.add_argument("--slow-rate", type=float, default=20, help="MB/s of the slow pull")
    parser.add_argument("--before-ref", default=BEFORE)
    parser.add_argument("--fill", action="store_true", help="first pulls that fill the plaintext cache")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.workdir)))
        before_src = work / "before-src"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before_src), args.before_ref],
                       check=True, capture_output=True)
        stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(before_src)],
                       capture_output=True)
        nocache = {"SOKO_PLAINTEXT_CACHE_ON_PUSH": "false"} if args.fill else {"SOKO_PLAINTEXT_CACHE_BYTES": "0"}
        servers = {
            "before": start_soko(work / "before", env={**nocache, "PYTHONPATH": str(before_src / "src")}),
            "after": start_soko(work / "after", env=nocache),
        }
        for server in servers.values():
            stack.callback(server.stop)
        base = random_data("streamed", args.mib * MiB)
        blob = make_blob_file(work / "blob", base, "streamed")
        for server in servers.values():
            push_monolithic(Target(server.host, server.auth_header()), "bench/streamed", blob)
        cpu: dict[str, list[float]] = defaultdict(list)  # server CPU seconds per GB
        speed: dict[str, list[float]] = defaultdict(list)
        for round_ in range(args.rounds):
            if args.fill:
                blob = make_blob_file(work / "blob", base, f"streamed/{round_}")
                for server in servers.values():
                    push_monolithic(Target(server.host, server.auth_header()), "bench/streamed", blob)
            for name in random.Random(round_).sample(list(servers), len(servers)):
                server = servers[name]
                before = cpu_seconds(server.pid)
                seconds = pull_blob(Target(server.host, server.auth_header()), "bench/streamed", blob)
                cpu[name].append((cpu_seconds(server.pid) - before) / blob.size * 1e9)
                speed[name].append(blob.size / seconds / 1e6)
                log(f"round {round_ + 1} {name}: {speed[name][-1]:.0f} MB/s, {cpu[name][-1]:.2f} CPU s/GB")
        slow = min(args.slow_mib * MiB, blob.size)
        growth: dict[str, int | None] = dict.fromkeys(servers)
        for name, server in servers.items():
            if args.fill:  # (the blob is in the cache now: sent as a file, at the client's pace either way)
                continue
            growth[name] = size = _slow_pull(server, "bench/streamed", blob.digest, slow, args.slow_rate * 1e6)
            log(f"slow pull {name}: server RSS +{size / MiB:.0f} MiB")

    def spread(values: list[float], digits: int = 2) -> str:
        return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    paired = [a / b for a, b in zip(cpu["after"], cpu["before"], strict=True)]
    cache = "first pulls filling the plaintext cache" if args.fill else "plaintext cache off"
    print(f"{args.mib} MiB blob (AES256, {cache}), {args.rounds} rounds, loopback, {os.cpu_count()} "
          f"cores, load {os.getloadavg()[0]:.1f}\n")
    print("| server | pull MB/s | server CPU s/GB | CPU after/before (paired) | RSS growth, slow pull |")
    print("|---|---|---|---|---|")
    for name in servers:
        ratio = f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})" if name == "after" else ""
        grew = growth[name]
        rss = "" if grew is None else f"+{grew / MiB:.0f} MiB ({args.slow_mib} MiB at {args.slow_rate:.0f} MB/s)"
        print(f"| {name} | {spread(speed[name], 0)} | {spread(cpu[name])} | {ratio} | {rss} |")


if __name__ == "__main__":
    main()
