"""Many pullers at once: N concurrent clients pulling a mix of one big layer and small layers, while manifest GETs
are timed (time to first byte) — does a worker streaming big blobs starve small requests?

The pullers are one ``curl --parallel --parallel-max N`` (C, event-driven: the load generator costs little of the
two cores); each "client" fetches the big layer once and ``SMALL_PER_CLIENT`` small layers, interleaved. The
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


def _curl_config(target: ops.Target, layers: StormLayers, clients: int, path: Path) -> int:
    """The transfers, one client's after another's, big and small interleaved; returns the bytes they total."""
    lines = [f'header = "{key}: {value}"' for key, value in target.auth.items()]
    total = 0
    for client in range(clients):
        blobs = [layers.small[(client * SMALL_PER_CLIENT + i) % len(layers.small)] for i in range(SMALL_PER_CLIENT)]
        blobs.insert(client % (SMALL_PER_CLIENT + 1), layers.big)
        for blob in blobs:
            lines += [f'url = "{target.url}/v2/{layers.repo}/blobs/{blob.digest}"', 'output = "/dev/null"']
            total += blob.size
    path.write_text("\n".join(lines) + "\n")
    return total


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
    config = workdir / f"storm-{clients}.curl"
    total = _curl_config(target, layers, clients, config)
    stop, ttfb, errors = threading.Event(), [], []
    headers = {"Accept": ops.OCI_MANIFEST, **target.auth}
    prober = threading.Thread(target=_probe, args=(target.host, manifest_path, headers, stop, ttfb, errors))
    cpu_before = cpu_seconds(server_pid)
    prober.start()
    started = time.perf_counter()
    argv = ["curl", "-sS", "--fail", "-L", "--parallel", "--parallel-max", str(clients), "--parallel-immediate",
            "-w", "%{http_code} %{size_download}\\n", "-K", str(config)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    stop.set()
    prober.join()
    cpu = cpu_seconds(server_pid) - cpu_before
    received = 0
    for line in out.stdout.splitlines():
        code, _, size = line.partition(" ")
        if code != "200":
            errors.append(f"blob GET answered {code}")
        received += int(size or 0)
    if out.returncode != 0 or received != total:
        errors.append(f"curl exit {out.returncode}, {received} of {total} bytes: {out.stderr.strip()[:200]}")
    return StormResult(clients, seconds, received, ttfb, cpu), errors[:5]
