"""What a domain read costs on the event loop, against the thread hop that offloading it costs.

    .venv/bin/python bench/event_loop_reads.py                      # SQLite and the local PostgreSQL
    .venv/bin/python bench/event_loop_reads.py --rtt-ms 0.5         # also: PostgreSQL with 0.5 ms added per query

A query on the event loop stalls every other request of the worker for its whole duration; ``offload`` (one
``run_in_executor`` round trip) costs a thread hop instead. For each call this prints the median and p99 in µs,
so ``docs/architecture.md``'s rule (which reads may stay on the loop) rests on figures. ``--rtt-ms`` sleeps that
long in every statement (a stand-in for a remote database's round trip; SQLAlchemy's ``before_cursor_execute``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import sqlalchemy as sa  # noqa: E402
from tests.databases import fresh_database  # noqa: E402
from tests.domain import push_blob, push_image  # noqa: E402

from soko.access import RequestContext, repository_arn  # noqa: E402
from soko.config import Settings  # noqa: E402
from soko.http.threads import offload  # noqa: E402
from soko.iam.service import Identity  # noqa: E402
from soko.registry import Registry  # noqa: E402
from soko.registry.models import RepoRef  # noqa: E402

ACCOUNT = "000000000000"
N = 2000


def timed(fn: Callable[[], object], n: int = N) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def thread_hop() -> tuple[float, float]:
    async def run() -> tuple[float, float]:
        samples = []
        for _ in range(N):
            started = time.perf_counter()
            await offload(int)
            samples.append((time.perf_counter() - started) * 1e6)
        samples.sort()
        return statistics.median(samples), samples[int(len(samples) * 0.99)]

    return asyncio.run(run())


def measure(kind: str, rtt_ms: float) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as workdir, fresh_database(kind, workdir, prefix="bench") as url:
        settings = Settings(data_dir=workdir, database_url=url, account_id=ACCOUNT)
        registry = Registry.open(settings)
        identity = Identity(registry.ctx)
        try:
            root = identity.bootstrap_root()
            ref = RepoRef(ACCOUNT, "bench/app")
            registry.repositories.create(ref)
            push_image(registry, ref, "latest", [os.urandom(64)])
            digest = push_blob(registry, ref, os.urandom(64))
            principal = identity.credentials.is_valid(root[0]) if root else None
            assert principal is not None
            context = RequestContext(request_id="bench", source_ip="127.0.0.1")
            arn = repository_arn(settings.region, ACCOUNT, ref.name)
            if rtt_ms:
                sa.event.listen(
                    registry.ctx.db.engine, "before_cursor_execute", lambda *a: time.sleep(rtt_ms / 1000)
                )
            manifests = registry.manifests

            def uncached_manifest() -> None:
                registry.ctx.generation.bump()  # what any write does: the next read goes to the database
                manifests.get(ref, "latest")

            def uncached_authorize() -> None:
                registry.ctx.generation.bump()
                identity.authorizer.authorize(principal, "ecr:BatchGetImage", arn, ACCOUNT, context)

            return [
                ("manifest GET by tag, cached", *timed(lambda: manifests.get(ref, "latest"))),
                ("manifest GET by tag, after a write (DB)", *timed(uncached_manifest, N // 4)),
                ("authorize, cached decision", *timed(
                    lambda: identity.authorizer.authorize(principal, "ecr:BatchGetImage", arn, ACCOUNT, context))),
                ("authorize, after a write (DB)", *timed(uncached_authorize, N // 4)),
                ("blob stat (DB every time)", *timed(lambda: registry.blobs.stat(ref, digest), N // 4)),
                ("tags list (DB every time)", *timed(lambda: manifests.list_tags(ref), N // 4)),
            ]
        finally:
            registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--skip-postgresql", action="store_true")
    args = parser.parse_args()
    hop = thread_hop()
    print(f"| call | SQLite p50 / p99 µs | PostgreSQL p50 / p99 µs |\n|---|---|---|\n| offload (thread hop) | "
          f"{hop[0]:.0f} / {hop[1]:.0f} | |")
    sqlite = measure("sqlite", 0.0)
    pg = measure("postgresql", args.rtt_ms) if not args.skip_postgresql else [(n, 0.0, 0.0) for n, _, _ in sqlite]
    for (name, s50, s99), (_, p50, p99) in zip(sqlite, pg, strict=True):
        print(f"| {name} | {s50:.0f} / {s99:.0f} | {p50:.0f} / {p99:.0f} |")


if __name__ == "__main__":
    main()
