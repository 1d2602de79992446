"""Small-request load: ``wrk`` for GET, ``hey`` for HEAD (wrk 4.1 waits for a body after HEAD, so it cannot
measure HEAD). Each run also reads the server's CPU time from /proc before and after."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from procstat import cpu_seconds

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    rps: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float


def _headers(headers: dict[str, str]) -> list[str]:
    return [arg for key, value in headers.items() for arg in ("-H", f"{key}: {value}")]


def parse_wrk(output: str) -> tuple[int, float, float, int]:
    """(requests, req/s, p99 ms, errors) from ``wrk --latency`` output."""
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    p99_ms = float(p99.group(1)) * UNITS[p99.group(2)] * 1e3 if p99 else float("nan")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return requests, rps, p99_ms, errors


def parse_hey(output: str) -> tuple[int, float, float, int]:
    """(requests, req/s, p99 ms, errors) from ``hey`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%+ in ([\d.]+) secs", output)
    p99_ms = float(p99.group(1)) * 1e3 if p99 else float("nan")
    statuses = [(int(code), int(count)) for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", output)]
    requests = sum(count for _, count in statuses)
    errors = sum(count for code, count in statuses if code >= 400)
    error_block = output.split("Error distribution:", 1)
    if len(error_block) == 2:
        errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", error_block[1], re.M))
    return requests, rps, p99_ms, errors


def _run(argv: list[str], server_pid: int, duration: float,
         parse: Callable[[str], tuple[int, float, float, int]]) -> LoadResult:
    before = cpu_seconds(server_pid)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = cpu_seconds(server_pid)
    if result.returncode != 0:
        raise LoadError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    requests, rps, p99_ms, errors = parse(result.stdout)
    if requests == 0:
        raise LoadError(f"{argv[0]} made no request:\n{result.stdout[-2000:]}")
    return LoadResult(requests, rps, p99_ms, errors, (after - before) / requests * 1e6)


def wrk_get(url: str, headers: dict[str, str], server_pid: int, duration: float,
            connections: int = 64, threads: int = 2) -> LoadResult:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", *_headers(headers), url]
    return _run(argv, server_pid, duration, parse_wrk)


def hey_head(url: str, headers: dict[str, str], server_pid: int, duration: float,
             connections: int = 64) -> LoadResult:
    argv = ["hey", "-z", f"{duration:g}s", "-c", str(connections), "-m", "HEAD", *_headers(headers), url]
    return _run(argv, server_pid, duration, parse_hey)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
