"""Many pullers at once: N concurrent clients pulling a mix of one big layer and small layers, while manifest GETs
are timed (time to first byte) — does a worker streaming big blobs starve small requests?

The pullers are ``LOADERS`` processes of ``curl --parallel`` (C, event-driven), the clients dealt between them: one
curl is one thread, and at ~0.35 s of CPU per GB received it capped a storm near 2.9 GB/s whatever the server; each
"client" fetches the big layer once and ``SMALL_PER_CLIENT`` small layers, interleaved. The
manifest prober is a thread with one keep-alive connection, a GET every ``PROBE_INTERVAL`` s for the whole storm.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ops
from procstat import cpu_seconds

SMALL_PER_CLIENT = 4
LOADERS = 2  # curl processes sharing the clients (one `curl --parallel` is one thread: it capped a storm at a core)
PROBE_INTERVAL = 0.005  # (a storm lasts ~1.5 s: at 20 ms its ~60 probes made the "p99" their maximum)


@dataclass
class StormResult:
    clients: int
    seconds: float
    bytes: int
    ttfb_ms: list[float]
    cpu_seconds: float

    @property
    def mb_s(self) -> float:
        return self.bytes / 1e6 / self.seconds

    @property
    def ttfb_p99(self) -> float:
        ordered = sorted(self.ttfb_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")

    @property
    def ttfb_p50(self) -> float:
        return statistics.median(self.ttfb_ms) if self.ttfb_ms else float("nan")

    @property
    def cpu_s_per_gb(self) -> float:
        return self.cpu_seconds / (self.bytes / 1e9) if self.bytes else float("nan")


@dataclass
class StormLayers:
    repo: str
    big: ops.BlobFile
    small: list[ops.BlobFile]


def prepare(target: ops.Target, workdir: Path, base: bytes, big_mib: int, small_kib: int, count: int) -> StormLayers:
    """Push the big layer and ``count`` small ones (distinct content) into ``bench/storm``."""
    repo = "bench/storm"
    big = ops.make_blob_file(workdir / "storm-big.bin", base[: big_mib << 20], "storm-big")
    ops.push_monolithic(target, repo, big)
    small = []
    for i in range(count):
        blob = ops.make_blob_file(workdir / f"storm-small-{i}.bin", base[: small_kib << 10], f"storm-small-{i}")
        ops.push_monolithic(target, repo, blob)
        small.append(blob)
    return StormLayers(repo, big, small)


def _curl_configs(
    target: ops.Target, layers: StormLayers, clients: int, workdir: Path
) -> tuple[list[tuple[Path, int]], int]:
    """The transfers, split between ``LOADERS`` curl processes (client i in process i mod LOADERS), each client's big
    and small layers interleaved; returns (config file, its clients) per process and the bytes they total."""
    header = [f'header = "{key}: {value}"' for key, value in target.auth.items()]
    lines: list[list[str]] = [list(header) for _ in range(min(LOADERS, clients))]
    total = 0
    for client in range(clients):
        blobs = [layers.small[(client * SMALL_PER_CLIENT + i) % len(layers.small)] for i in range(SMALL_PER_CLIENT)]
        blobs.insert(client % (SMALL_PER_CLIENT + 1), layers.big)
        for blob in blobs:
            lines[client % len(lines)] += [f'url = "{target.url}/v2/{layers.repo}/blobs/{blob.digest}"',
                                           'output = "/dev/null"']
            total += blob.size
    paths = []
    for n, part in enumerate(lines):
        path = workdir / f"storm-{clients}-{n}.curl"
        path.write_text("\n".join(part) + "\n")
        paths.append((path, len(range(n, clients, len(lines)))))
    return paths, total


def _probe(host: str, path: str, headers: dict[str, str], stop: threading.Event, out: list[float],
           errors: list[str]) -> None:
    conn = http.client.HTTPConnection(host, timeout=30)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            first = time.perf_counter()
            response.read()
            if response.status != 200:
                errors.append(f"manifest GET answered {response.status}")
            out.append((first - started) * 1000)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"manifest GET failed: {exc}")
            conn.close()
            conn = http.client.HTTPConnection(host, timeout=30)
        stop.wait(PROBE_INTERVAL)
    conn.close()


def run(target: ops.Target, server_pid: int, layers: StormLayers, clients: int, manifest_path: str,
        workdir: Path) -> tuple[StormResult, list[str]]:
    configs, total = _curl_configs(target, layers, clients, workdir)
    stop, ttfb, errors = threading.Event(), [], []
    headers = {"Accept": ops.OCI_MANIFEST, **target.auth}
    prober = threading.Thread(target=_probe, args=(target.host, manifest_path, headers, stop, ttfb, errors))
    cpu_before = cpu_seconds(server_pid)
    prober.start()
    started = time.perf_counter()
    loaders = [
        subprocess.Popen(
            ["curl", "-sS", "--fail", "-L", "--parallel", "--parallel-max", str(share), "--parallel-immediate",
             "-w", "%{http_code} %{size_download}\\n", "-K", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for config, share in configs
    ]
    outputs = [(loader, *loader.communicate(timeout=900)) for loader in loaders]
    seconds = time.perf_counter() - started
    stop.set()
    prober.join()
    cpu = cpu_seconds(server_pid) - cpu_before
    received = 0
    for loader, stdout, stderr in outputs:
        for line in stdout.splitlines():
            code, _, size = line.partition(" ")
            if code != "200":
                errors.append(f"blob GET answered {code}")
            received += int(size or 0)
        if loader.returncode != 0:
            errors.append(f"curl exit {loader.returncode}: {stderr.strip()[:200]}")
    if received != total:
        errors.append(f"{received} of {total} bytes")
    return StormResult(clients, seconds, received, ttfb, cpu), errors[:5]
