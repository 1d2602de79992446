"""Pull-through cache bench: first pull through Soko's cache vs a direct pull from the upstream, and a cached pull
vs Distribution's own proxy mode (``proxy.remoteurl``) on the same upstream, side by side in one short run.

The upstream is Distribution (Debian's ``docker-registry``) on loopback; each round pushes a fresh image (random
layers, so nothing is cached anywhere) and pulls it as a client does — manifest, then each blob in order — with
httpx, timing the time to the first byte of the first layer (TTFB) and the whole pull (total):

* direct: from the upstream itself;
* soko first: through a Soko pull-through cache rule (the repository does not exist yet: created, manifest fetched,
  every blob streamed while stored);
* soko cached: the same pull again (served from Soko's storage);
* soko plain: an ordinary pull of an image pushed to Soko directly (the "as fast as ordinary pulls" reference);
* distribution proxy first / cached: through a second Distribution in proxy mode.

    .venv/bin/python bench/pull_through.py [--rounds 3] [--layers 64,16,4]   (sizes in MiB)

Medians of the rounds go to stdout as a markdown table, with the spread (min-max) of the totals and the CPU seconds
the serving process spent on the pull (its whole process tree, from /proc: a figure the machine's load does not
skew as it skews wall-clock time); ratios are per-round paired medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import cpu_seconds
from tests.e2e.servers import SOKO_REGION, soko_root_key, start_soko
from tests.remote.upstreams import push_image, start_upstream

from soko.remote import Credentials, RegistryClient

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def pull(client: httpx.Client, repo: str, tag: str) -> tuple[float, float]:
    """(TTFB of the first layer, total seconds) of manifest + every blob, in order, bodies read and dropped."""
    start = time.perf_counter()
    manifest = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    manifest.raise_for_status()
    document = manifest.json()
    ttfb = None
    for descriptor in [*document["layers"], document["config"]]:
        with client.stream("GET", f"/v2/{repo}/blobs/{descriptor['digest']}") as response:
            response.raise_for_status()
            for _ in response.iter_raw(1 << 20):
                if ttfb is None:
                    ttfb = time.perf_counter() - start
    return ttfb or 0.0, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", default="64,16,4", help="layer sizes in MiB")
    args = parser.parse_args()
    sizes = [int(x) << 20 for x in args.layers.split(",")]
    results: dict[str, list[tuple[float, float]]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ptc-bench-") as tmp:
        root = Path(tmp)
        upstream = start_upstream(root / "upstream")
        proxy = start_upstream(root / "proxy", proxy=upstream.url)
        soko = start_soko(root / "soko")
        try:
            keys = soko_root_key(soko.data_dir)
            ecr = boto3.client(
                "ecr",
                endpoint_url=soko.url,
                region_name=SOKO_REGION,
                aws_access_key_id=keys["AccessKeyId"],
                aws_secret_access_key=keys["SecretAccessKey"],
            )
            ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="up", upstreamRegistryUrl=upstream.url)
            soko_push = RegistryClient(soko.url, Credentials(*soko.credentials))
            with (
                RegistryClient(upstream.url) as up,
                httpx.Client(base_url=upstream.url, timeout=300) as direct,
                httpx.Client(base_url=soko.url, auth=soko.credentials, timeout=300) as via_soko,
                httpx.Client(base_url=proxy.url, timeout=300) as via_proxy,
            ):
                # the ordinary images are pushed before the rounds: what a push starts in Soko (scans…) is not
                # running while a round's pulls are timed
                for round_ in range(args.rounds):
                    push_image(soko_push, f"plain/r{round_}", "v1", [os.urandom(size) for size in sizes])
                for round_ in range(args.rounds):
                    repo = f"bench/r{round_}"
                    push_image(up, repo, "v1", [os.urandom(size) for size in sizes])
                    plain = f"plain/r{round_}"
                    order = [
                        ("direct", direct, repo, upstream),
                        ("soko first", via_soko, f"up/{repo}", soko),
                        ("soko cached", via_soko, f"up/{repo}", soko),
                        ("distribution proxy first", via_proxy, repo, proxy),
                        ("distribution proxy cached", via_proxy, repo, proxy),
                        ("soko plain", via_soko, plain, soko),
                    ]
                    for name, client, path, server in order:
                        before = cpu_seconds(server.pid)
                        results.setdefault(name, []).append(pull(client, path, "v1"))
                        cpu.setdefault(name, []).append(cpu_seconds(server.pid) - before)
                    print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
            soko_push.close()
        finally:
            for server in (soko, proxy, upstream):
                server.kill()

    def ratio(a: str, b: str, index: int) -> float:
        return statistics.median(x[index] / y[index] for x, y in zip(results[a], results[b], strict=True))

    total_mib = sum(sizes) >> 20
    print(f"\nimage: layers {args.layers} MiB ({total_mib} MiB), {args.rounds} rounds, loopback, medians\n")
    print("| pull | TTFB ms | total s (min-max) | MB/s | server CPU s |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        ttfb = statistics.median(v[0] for v in values) * 1000
        totals = [v[1] for v in values]
        total = statistics.median(totals)
        spread = f"{min(totals):.3f}-{max(totals):.3f}"
        print(
            f"| {name} | {ttfb:.1f} | {total:.3f} ({spread}) | {sum(sizes) / 1e6 / total:.0f} | "
            f"{statistics.median(cpu[name]):.2f} |"
        )
    print()
    print(
        f"* soko first / direct: TTFB {ratio('soko first', 'direct', 0):.2f}x, total "
        f"{ratio('soko first', 'direct', 1):.2f}x (target total ≤ 1.2x)"
    )
    print(f"* soko cached / soko plain: total {ratio('soko cached', 'soko plain', 1):.2f}x (target ≈ 1x)")
    print(
        f"* soko cached / distribution proxy cached: total {ratio('soko cached', 'distribution proxy cached', 1):.2f}x"
    )
    print(f"* soko first / distribution proxy first: total {ratio('soko first', 'distribution proxy first', 1):.2f}x")
    first_cpu = statistics.median(cpu["soko first"]) / max(statistics.median(cpu["distribution proxy first"]), 1e-3)
    print(f"* server CPU, soko first / distribution proxy first: {first_cpu:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
