"""GC race stress test (issue 5): concurrent pushes, deletes, tag moves, pulls, lifecycle expiry and GC for minutes,
then ``soko fsck`` and the end-state checks.
``python bench/stress.py [--minutes 3] [--database sqlite|postgresql|both]``

The workload is ``tests/stress/scenario.py`` (the CI test ``tests/stress/test_gc_race.py`` runs it for ~10 s per
database): threads drive the domain service in-process — pushers (fresh, shared and mounted layers; indexes),
a deleter (by digest, by tag, by tag with the image), a tag mover, a puller that re-hashes what it reads, a
lifecycle runner (keep the last N images) and the collector (``gc.run(grace_period=G)``, G = 2 s), plus a
metering reader checking each snapshot adds up. At the end, with nothing in flight:

1. ``soko fsck`` (the CLI, in a subprocess, on the same data dir and database) reports nothing;
2. ``soko gc --grace-period 0s`` (the CLI) runs once;
3. ``soko fsck`` again, and: blob rows == digests some repository links == files in storage (same sizes), every
   link is referenced by a manifest, no link review, upload or trash left; metering's stored bytes (per
   repository logical/physical, per account physical, registry total) equal a recomputation from the raw rows.

Prints a summary (operations, expected errors by type — e.g. a push whose blob was reclaimed before its manifest
arrived fails with MANIFEST_BLOB_UNKNOWN —, unexpected errors with tracebacks, violations) per database and exits 1
on any unexpected error or violation. PostgreSQL: ``--pg-url`` (default ``$SOKO_TEST_DATABASE_URL`` or the local
test server); a fresh schema is created and dropped. Not part of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO / "src", REPO):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests.databases import fresh_database  # noqa: E402
from tests.stress.scenario import Config, Workload, verify  # noqa: E402

from soko.config import load_settings  # noqa: E402
from soko.meta import Database  # noqa: E402
from soko.registry import Registry  # noqa: E402
from soko.storage import FilesystemDriver  # noqa: E402

DEFAULT_PG = os.environ.get("SOKO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def database(kind: str, workdir: str, pg_url: str) -> contextlib.AbstractContextManager[str]:
    return fresh_database(kind, workdir, pg_url, prefix="stress")


def soko_cli(data_dir: str, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for name in list(env):
        if name.startswith("SOKO_"):
            del env[name]
    cmd = [sys.executable, "-m", "soko", *args, "--data-dir", data_dir, "--database-url", url]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def run_one(kind: str, args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="soko-stress-") as workdir, database(kind, workdir, args.pg_url) as url:
        data_dir = os.path.join(workdir, "data")
        os.makedirs(data_dir)
        settings = load_settings(overrides={"data_dir": data_dir, "database_url": url}, env={})
        db = Database(url, pool_size=8)
        db.migrate()
        registry = Registry(settings, db, FilesystemDriver(settings.blob_root))
        config = Config(
            seconds=args.minutes * 60,
            repositories=args.repositories,
            pushers=args.pushers,
            keep_images=args.keep,
            grace=args.grace,
            seed=args.seed,
        )
        log(f"{kind}: running for {config.seconds:.0f}s ({config})")
        started = time.monotonic()
        workload = Workload(registry, config)
        stats = workload.run(progress=lambda text: log(f"{kind}: {text}"))
        log(f"{kind}: workload stopped after {time.monotonic() - started:.0f}s; verifying")

        def fsck() -> list[str]:
            proc = soko_cli(data_dir, url, "fsck")
            lines = [line for line in proc.stdout.splitlines() if not line.startswith("fsck:")]
            if proc.returncode != 0 and not lines:
                lines = [f"soko fsck exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"]
            log(f"{kind}: soko fsck → {proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr}")
            return lines

        def final_gc() -> None:
            proc = soko_cli(data_dir, url, "gc", "--grace-period", "0s")
            log(f"{kind}: soko gc --grace-period 0s → {proc.stdout.strip() or proc.stderr.strip()[-2000:]}")
            if proc.returncode != 0:
                stats.violation(f"soko gc exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")

        verify(registry, stats, final_gc=final_gc, fsck=fsck)
        registry.close()
        print(f"\n## {kind}: {args.minutes:g} min, grace {args.grace:g}s\n")
        print(stats.summary())
        for failure in stats.failures[:10]:
            print("\n--- unexpected error ---\n" + failure)
        print(f"\n{kind}: {'OK' if stats.ok else 'FAILED'}", flush=True)
        return stats.ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the workload runs per database")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--grace", type=float, default=2.0, help="GC grace period in seconds during the run")
    parser.add_argument("--pushers", type=int, default=3)
    parser.add_argument("--repositories", type=int, default=4)
    parser.add_argument("--keep", type=int, default=5, help="the lifecycle policy keeps the last N images")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("soko.gc").setLevel(logging.ERROR)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = {kind: run_one(kind, args) for kind in kinds}
    print("\n" + ", ".join(f"{k}: {'OK' if ok else 'FAILED'}" for k, ok in results.items()) + f" (seed {args.seed})")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
