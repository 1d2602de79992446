"""DescribeRepositories with 10,000 repositories: throughput and latency with concurrent boto3 clients.

Starts `soko serve` on a fresh data directory (like bench/run.py) or uses a running Soko (--url with its root key
in --access-key/--secret-key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), creates the repositories (skipping ones
that exist), then runs, for --duration seconds each with --clients threads (one boto3 client per thread):

  * describe-by-name   DescribeRepositories(repositoryNames=[one random name])
  * page-100           DescribeRepositories() walking the default 100-repository pages (each request timed)
  * page-1000          DescribeRepositories(maxResults=1000) pages

and prints a markdown table: requests, requests/s, repositories/s, p50 and p99 latency.

    .venv/bin/python bench/control_plane_repositories.py [--repos 10000] [--clients 8] [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def make_client(url: str, key: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ecr",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "legacy", "max_attempts": 1}, max_pool_connections=4),
    )


def name_of(i: int) -> str:
    return f"bench/team{i % 50:02d}/service-{i:05d}"


def create_repositories(url: str, key: str, secret: str, count: int, clients: int) -> float:
    from botocore.exceptions import ClientError

    local = threading.local()

    def create(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = make_client(url, key, secret)
        try:
            local.client.create_repository(repositoryName=name_of(i))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "RepositoryAlreadyExistsException":
                raise

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, range(count)))
    return time.perf_counter() - started


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_load(url, key, secret, clients: int, duration: float, one_request) -> tuple[list[float], int]:
    """Each thread repeats ``one_request(client, state) -> repositories returned`` until the deadline."""
    latencies: list[float] = []
    returned = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker(seed: int) -> None:
        client = make_client(url, key, secret)
        state: dict = {"rng": random.Random(seed)}
        mine: list[float] = []
        count = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            count += one_request(client, state)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)
            returned[0] += count

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, returned[0]


def by_name(total: int):
    def request(client, state) -> int:
        name = name_of(state["rng"].randrange(total))
        return len(client.describe_repositories(repositoryNames=[name])["repositories"])

    return request


def paginated(page_size: int | None):
    def request(client, state) -> int:
        kwargs: dict = {}
        if page_size:
            kwargs["maxResults"] = page_size
        if state.get("token"):
            kwargs["nextToken"] = state["token"]
        out = client.describe_repositories(**kwargs)
        state["token"] = out.get("nextToken")  # wraps to the first page at the end
        return len(out["repositories"])

    return request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running Soko (default: start one)")
    parser.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID"))
    parser.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    parser.add_argument("--repos", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=None, help="soko serve --workers (when started here)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    server = None
    tmp = None
    if args.url:
        url, key, secret = args.url.rstrip("/"), args.access_key, args.secret_key
        if not key or not secret:
            parser.error("--url needs the root key: --access-key/--secret-key or AWS_ACCESS_KEY_ID/..._SECRET_...")
    else:
        from tests.e2e.servers import soko_root_key, start_soko

        tmp = tempfile.TemporaryDirectory(prefix="soko-bench-cp-", dir=args.workdir)
        server = start_soko(Path(tmp.name) / "soko", workers=args.workers)
        keys = soko_root_key(server.data_dir)
        url, key, secret = server.url, keys["AccessKeyId"], keys["SecretAccessKey"]
    try:
        print(f"creating {args.repos} repositories with {args.clients} clients…", file=sys.stderr)
        took = create_repositories(url, key, secret, args.repos, args.clients)
        print(f"created in {took:.1f} s ({args.repos / took:.0f}/s)", file=sys.stderr)
        rows = []
        for label, request in (
            ("describe-by-name", by_name(args.repos)),
            ("page-100", paginated(None)),
            ("page-1000", paginated(1000)),
        ):
            print(f"running {label} for {args.duration:.0f} s…", file=sys.stderr)
            latencies, returned = run_load(url, key, secret, args.clients, args.duration, request)
            rows.append(
                (
                    label,
                    len(latencies),
                    len(latencies) / args.duration,
                    returned / args.duration,
                    percentile(latencies, 50) * 1000,
                    percentile(latencies, 99) * 1000,
                )
            )
        print(
            f"\nDescribeRepositories, {args.repos} repositories, {args.clients} concurrent boto3 clients, "
            f"{args.duration:.0f} s per row\n"
        )
        print("| request | requests | req/s | repositories/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, n, rps, repos_s, p50, p99 in rows:
            print(f"| {label} | {n} | {rps:.0f} | {repos_s:.0f} | {p50:.1f} | {p99:.1f} |")
        print(f"\nCreateRepository x {args.repos}: {took:.1f} s ({args.repos / took:.0f}/s)")
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
