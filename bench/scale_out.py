"""Scale-out bench: Soko nodes on PostgreSQL + one S3 server (Ceph's radosgw), side by side in one run.

``python bench/scale_out.py [--quick] [--rounds N]``

* manifest GET by tag, 64 connections, one load generator (``wrk``, one thread per node): 1 node vs 3 nodes;
  req/s, p99 and server CPU per request summed over every node process;
* aggregate throughput of 16 concurrent blob pulls (``curl -L``, spread over the 3 nodes): presigned redirects
  (the bucket serves the bytes) vs proxied through Soko; Soko's CPU per pull (all node CPU in the window, idle
  work included); and the redirect alone: blob GETs answered 307 under wrk, CPU per request;
* blob push into S3, monolithic and chunked: one Soko node vs Distribution 2.8.2 (Debian's ``docker-registry``)
  with its ``s3`` driver on the same radosgw.

Rounds interleave the variants (order rotated each round); the table gives medians, the spread (min-max) and
paired ratios. The machine's load average is recorded before and after: other work on it shows up as spread.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.databases import fresh_database  # noqa: E402
from tests.e2e.servers import RegistryServer, start_distribution, start_soko  # noqa: E402

import load  # noqa: E402
import ops  # noqa: E402
from procstat import cpu_seconds  # noqa: E402

MiB = 1 << 20
ROOT = ("AKIASCALEOUTBENCH001", "scale-out-bench-secret-00000000000000000")
MANIFEST_REPO, MANIFEST_TAG = "bench/manifest", "latest"
PULLS = 16


def log(message: str) -> None:
    print(f"[scale-out {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def radosgw(directory: Path):
    script = REPO / "scripts" / "ceph-rgw.sh"
    started = subprocess.run([str(script), "start", str(directory)], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise SystemExit(f"scripts/ceph-rgw.sh start failed:\n{started.stderr}")
    endpoint, key, secret = started.stdout.split()
    try:
        yield endpoint, key, secret
    finally:
        subprocess.run([str(script), "destroy", str(directory)], capture_output=True, check=False)


def make_bucket(endpoint: str, key: str, secret: str, name: str) -> None:
    import botocore.session
    from botocore.config import Config

    client = botocore.session.Session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=name)


MANIFEST_PATH = f"/v2/{MANIFEST_REPO}/manifests/{MANIFEST_TAG}"


def wrk_spread(nodes: list[RegistryServer], duration: float, path: str = MANIFEST_PATH,
               connections: int = 63) -> load.LoadResult:
    """One wrk, one thread per entry of ``nodes`` (its connections go to that node), CPU summed over all."""
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    hosts = ", ".join(f'{{"{n.host.split(":")[0]}", "{n.host.split(":")[1]}"}}' for n in nodes)
    lua.write_text(f"""
local hosts = {{{hosts}}}
local next_host = 0
function setup(thread)
  next_host = next_host % #hosts + 1
  thread.addr = wrk.lookup(hosts[next_host][1], hosts[next_host][2])[1]
end
""")
    headers = {"Accept": ops.OCI_MANIFEST, **nodes[0].auth_header()}
    argv = ["wrk", f"-t{len(nodes)}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(lua),
            *load._headers(headers), f"{nodes[0].url}{path}"]
    pids = sorted({n.pid for n in nodes})
    before = sum(cpu_seconds(pid) for pid in pids)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = sum(cpu_seconds(pid) for pid in pids)
    lua.unlink()
    if result.returncode != 0:
        raise load.LoadError(result.stderr[-2000:])
    requests, rps, p99, errors = load.parse_wrk(result.stdout)
    return load.LoadResult(requests, rps, p99, errors, (after - before) / requests * 1e6)


def concurrent_pulls(nodes: list[RegistryServer], repo: str, blob: ops.BlobFile) -> tuple[float, float]:
    """16 curls at once, round robin over ``nodes``: (aggregate MB/s, Soko CPU ms per pull)."""
    pids = sorted({n.pid for n in nodes})
    before = sum(cpu_seconds(pid) for pid in pids)
    started = time.perf_counter()
    with ThreadPoolExecutor(PULLS) as pool:
        targets = [ops.Target(nodes[i % len(nodes)].host, nodes[i % len(nodes)].auth_header()) for i in range(PULLS)]
        list(pool.map(lambda t: ops.pull_blob(t, repo, blob), targets))
    wall = time.perf_counter() - started
    after = sum(cpu_seconds(pid) for pid in pids)
    return PULLS * blob.size / wall / 1e6, (after - before) / PULLS * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds, 3 s loads, 32 MiB blobs")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--push-only", action="store_true", help="only the blob push rows (Soko vs Distribution)")
    parser.add_argument("--baseline-src", metavar="DIR", help="also push through a Soko node running the code in "
                        "DIR (e.g. `git archive main src | tar -x -C DIR`): before/after paired in one run")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "scale_out.json"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    duration = 3.0 if args.quick else 10.0
    push_mib, pull_mib, chunk_mib = (32, 16, 8) if args.quick else (128, 64, 16)

    results: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="soko-scale-out-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        log("starting radosgw")
        endpoint, key, secret = stack.enter_context(radosgw(workdir / "radosgw"))
        for bucket in ("soko-bench", "distribution-bench"):
            make_bucket(endpoint, key, secret, bucket)
        database_url = stack.enter_context(fresh_database("postgresql", str(workdir), prefix="bench"))
        env = {
            "SOKO_DATABASE_URL": database_url,
            "SOKO_STORAGE_URL": f"s3://soko-bench/registry?endpoint_url={endpoint}&addressing_style=path",
            "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
            "SOKO_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "SOKO_ROOT_ACCESS_KEY_ID": ROOT[0], "SOKO_ROOT_SECRET_ACCESS_KEY": ROOT[1],
            "SOKO_ACCESS_LOG": "off",
        }
        log("starting 3 proxying nodes, 3 redirecting nodes and Distribution (s3 driver)")
        with ThreadPoolExecutor(6) as pool:
            proxied = list(pool.map(lambda i: start_soko(workdir / f"proxied-{i}", env=env), range(3)))
            redirect = list(pool.map(
                lambda i: start_soko(workdir / f"redirect-{i}", env={**env, "SOKO_STORAGE_REDIRECT": "true"}),
                range(3)))
        for server in (*proxied, *redirect):
            stack.callback(server.stop)
        baseline = None
        if args.baseline_src:
            src = str(Path(args.baseline_src).resolve() / "src")
            baseline = start_soko(workdir / "baseline", env={**env, "PYTHONPATH": src})
            stack.callback(baseline.stop)
        distribution = start_distribution(workdir / "distribution", s3={
            "bucket": "distribution-bench", "regionendpoint": endpoint, "accesskey": key, "secretkey": secret,
            "chunksize": str(chunk_mib * MiB)})
        stack.callback(distribution.kill)

        target = ops.Target(proxied[0].host, proxied[0].auth_header())
        ops.push_small_image(target, MANIFEST_REPO, MANIFEST_TAG)
        base = os.urandom(max(push_mib, pull_mib) * MiB)
        pull_blob = ops.make_blob_file(workdir / "pull.bin", base[:pull_mib * MiB], "pull")
        ops.push_monolithic(target, "bench/pull", pull_blob)
        for node in (*proxied, *redirect):  # warm: every node has the manifest cached
            load.wrk_get(f"{node.url}/v2/{MANIFEST_REPO}/manifests/{MANIFEST_TAG}",
                         {"Accept": ops.OCI_MANIFEST, **node.auth_header()}, node.pid, 1.0)

        for round_no in range(rounds):
            log(f"round {round_no + 1}/{rounds} (load {loadavg()})")
            if not args.push_only:
                variants = [("1 node", [proxied[0]] * 3), ("3 nodes", proxied)]
                for name, nodes in variants[round_no % 2:] + variants[:round_no % 2]:
                    r = wrk_spread(nodes, duration)
                    results["manifest GET by tag, 64 conns (wrk) | req/s"][name].append(r.rps)
                    results["manifest GET p99 latency | ms"][name].append(r.p99_ms)
                    results["manifest GET server CPU per request | µs"][name].append(r.cpu_us_per_request)
                    if r.errors:
                        log(f"{name}: {r.errors} errors")
                r = wrk_spread(redirect, duration, f"/v2/bench/pull/blobs/{pull_blob.digest}")
                results["blob GET answered 307 by 3 nodes, 64 conns (wrk) | req/s"]["redirect"].append(r.rps)
                results["blob GET 307 server CPU per request | µs"]["redirect"].append(r.cpu_us_per_request)
                pulls = [("proxied", proxied), ("redirect", redirect)]
                for name, nodes in pulls[round_no % 2:] + pulls[:round_no % 2]:
                    mbps, cpu_ms = concurrent_pulls(nodes, "bench/pull", pull_blob)
                    results[f"{PULLS} concurrent blob pulls ({pull_mib} MiB), 3 nodes | MB/s"][name].append(mbps)
                    results["Soko CPU per pull | ms"][name].append(cpu_ms)
            pushers = [("soko", proxied[0]), ("distribution", distribution)]
            if baseline is not None:
                pushers.append(("soko baseline", baseline))
            for name, server in pushers[round_no % 2:] + pushers[:round_no % 2]:
                t = ops.Target(server.host, server.auth_header())
                mono = ops.make_blob_file(workdir / "mono.bin", base[:push_mib * MiB], f"mono-{name}-{round_no}")
                seconds = ops.push_monolithic(t, "bench/push", mono)
                results[f"blob push into S3, monolithic ({push_mib} MiB) | MB/s"][name].append(
                    mono.size / seconds / 1e6)
                chunked = ops.make_blob_file(workdir / "chunked.bin", base[:push_mib * MiB],
                                             f"chunk-{name}-{round_no}")
                seconds = ops.push_chunked(t, "bench/push", chunked, chunk_mib * MiB)
                results[f"blob push into S3, chunked ({chunk_mib} MiB PATCHes) | MB/s"][name].append(
                    chunked.size / seconds / 1e6)
    load_after = loadavg()

    print(f"Scale-out bench, {rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} cores, "
          f"load average {load_before} before, {load_after} after\n")
    print("| test | unit | variant A | median (min-max) | variant B | median (min-max) | B/A |")
    print("|---|---|---|---|---|---|---|")
    for test, by_variant in results.items():
        title, unit = test.split(" | ")
        cells, medians = [], []
        for variant, values in by_variant.items():
            median = statistics.median(values)
            medians.append(median)
            cells.append(f"{variant} | {fmt(median)} ({fmt(min(values))}-{fmt(max(values))})")
        ratio = f"{medians[1] / medians[0]:.2f}x" if len(medians) == 2 and medians[0] else ""
        print(f"| {title} | {unit} | {' | '.join(cells)} | {ratio} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"load_before": load_before, "load_after": load_after,
                                             "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
