"""Lifecycle evaluation over one repository of 100,000 images, and GC over 1,000,000 blob rows: time and peak memory,
on SQLite and PostgreSQL.  ``python bench/lifecycle_gc.py [--database sqlite|postgresql|both] [--images N]
[--blobs N] [--only lifecycle|gc]``

Rows are generated with bulk inserts (sqlite3 ``executemany`` with ``synchronous=OFF``; PostgreSQL ``COPY``) straight
into a freshly migrated schema (SQLite: a temp file; PostgreSQL: a fresh schema of ``--pg-url``, dropped afterwards),
then the domain code runs as it does in production:

* **lifecycle**: one repository with N images (pushed one minute apart, 70 % tagged ``v<i>``, 5 % with a second
  tag, 1 % indexes over two images each, 1 % referrers of an image), a three-rule policy (keep the last 1,000
  ``v*``; expire untagged after 1 day; keep the last N/2 of any). Timed: ``image_records`` (the evaluator's input
  from the database), ``evaluate``, and a dry-run ``LifecycleRunner.run`` (both, plus sorting).
* **gc**: N blob rows in 10 repositories: 90 % referenced (9 blobs per manifest), 5 % linked but unreferenced (a
  fifth of them with a pending link review, the rest found by the sweep), 5 % not linked at all; all older than
  the grace period; storage files only for 1,000 of the unreferenced blobs (``sweep_storage=False``). Timed:
  ``registry.gc.run(grace_period=3600, sweep_storage=False)`` — a dry run first, then the real one (which must
  delete exactly the 5 % links and 10 % blobs).

Each (operation, database) runs in its own child process. Memory: "RSS peak" is the process's VmHWM during the
operation (reset with ``/proc/self/clear_refs`` after the rows are generated, so it is the peak of the resident
set while the operation ran, the already-resident interpreter and libraries included; ``resource.getrusage`` as a
fallback); "Python peak" is ``tracemalloc``'s peak during a second, traced pass over the same rows (lifecycle) or
over regenerated rows (GC: a traced dry run, then a traced real run), so the timed pass carries no tracing overhead
and the timed real GC does not inherit the resident set the tracing left behind.

The markdown table goes to stdout, progress to stderr. Not part of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import gc as python_gc
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO / "src", REPO):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import sqlalchemy as sa  # noqa: E402
from tests.databases import fresh_database  # noqa: E402

from soko.config import load_settings  # noqa: E402
from soko.lifecycle import evaluate, parse_lifecycle_policy  # noqa: E402
from soko.meta import Database  # noqa: E402
from soko.registry import Registry  # noqa: E402
from soko.registry.lifecycle_runner import LifecycleRunner  # noqa: E402
from soko.registry.lifecycle_store import image_records  # noqa: E402
from soko.storage import FilesystemDriver  # noqa: E402
from soko.storage.paths import blob_path  # noqa: E402

PG_URL = os.environ.get("SOKO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ACCOUNT = "000000000000"
NOW = 1_800_000_000.0
MB = 1e6
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fake_digest(kind: str, i: int) -> str:
    return f"sha256:{kind}{i:0{64 - len(kind)}x}"


# ---- databases ---------------------------------------------------------------------------------------------------
def database(kind: str, workdir: str) -> contextlib.AbstractContextManager[str]:
    return fresh_database(kind, workdir, PG_URL, prefix="bench")


def open_registry(url: str, data_dir: str) -> Registry:
    settings = load_settings(overrides={"data_dir": data_dir, "database_url": url}, env={})
    os.makedirs(data_dir, exist_ok=True)
    db = Database(url)
    db.migrate()
    registry = Registry(settings, db, FilesystemDriver(settings.blob_root))
    registry.ctx.clock = lambda: NOW
    return registry


class Loader:
    """Bulk row insertion: sqlite3 executemany (synchronous off) or PostgreSQL COPY."""

    def __init__(self, registry: Registry) -> None:
        self.db = registry.ctx.db

    def load(self, table: str, columns: list[str], rows: Iterator[tuple] | list[tuple]) -> int:
        n = 0
        if self.db.is_sqlite:
            import sqlite3

            path = self.db.engine.url.database
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA synchronous=OFF")
            marks = ",".join("?" * len(columns))
            batch: list[tuple] = []
            with conn:
                for row in rows:
                    batch.append(row)
                    if len(batch) >= 50_000:
                        conn.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", batch)
                        n += len(batch)
                        batch = []
                if batch:
                    conn.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", batch)
                    n += len(batch)
            conn.close()
            return n
        import psycopg

        with (
            psycopg.connect(self.db.psycopg_dsn()) as conn,
            conn.cursor() as cur,
            cur.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                n += 1
        return n

    def finish(self, sequences: list[str]) -> None:
        """Move id sequences past the explicit ids and refresh planner statistics."""
        with self.db.engine.begin() as conn:
            if not self.db.is_sqlite:
                for table in sequences:
                    conn.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                        )
                    )
        if self.db.is_sqlite:
            with self.db.engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        else:
            with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))


def create_repositories(loader: Loader, count: int) -> list[int]:
    rows = [(i + 1, ACCOUNT, f"bench/repo{i}", NOW - 90 * 86400) for i in range(count)]
    loader.load("repositories", ["id", "account_id", "name", "created_at"], rows)
    return [r[0] for r in rows]


# ---- lifecycle data ------------------------------------------------------------------------------------------------
LIFECYCLE_POLICY = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep the last 1000 release images",
            "selection": {
                "tagStatus": "tagged",
                "tagPrefixList": ["v"],
                "countType": "imageCountMoreThan",
                "countNumber": 1000,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": "expire untagged images after a day",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 1,
            },
            "action": {"type": "expire"},
        },
    ]
}


def generate_lifecycle(registry: Registry, images: int) -> dict:
    loader = Loader(registry)
    (repo_id,) = create_repositories(loader, 1)
    rng = random.Random(7)
    payload = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}).encode()
    start = NOW - images * 60 - 3600
    n_index = max(1, images // 100)
    manifest_rows = []
    tag_rows = []
    child_rows = []
    plain = images - n_index
    for i in range(plain):
        digest = fake_digest("a", i)
        subject = fake_digest("a", rng.randrange(i)) if i % 100 == 50 else None  # 1 % referrers
        manifest_rows.append((i + 1, repo_id, digest, OCI_MANIFEST, payload, 1000 + i, subject, start + 60 * i, None))
        roll = rng.random()
        if subject is None and roll < 0.70:
            tag_rows.append((repo_id, f"v{i}", i + 1, start + 60 * i))
            if roll < 0.05:
                tag_rows.append((repo_id, f"build-{i}", i + 1, start + 60 * i))
    for j in range(n_index):
        mid = plain + j + 1
        children = rng.sample(range(plain), 2)
        manifest_rows.append(
            (mid, repo_id, fake_digest("b", j), OCI_INDEX, payload, 2000, None, start + 60 * max(children) + 1, None)
        )
        tag_rows.append((repo_id, f"multi-{j}", mid, start + 60 * max(children) + 1))
        child_rows += [(mid, fake_digest("a", c)) for c in children]
    loader.load(
        "manifests",
        [
            "id",
            "repository_id",
            "digest",
            "media_type",
            "payload",
            "image_size",
            "subject_digest",
            "pushed_at",
            "last_pulled_at",
        ],
        manifest_rows,
    )
    loader.load("tags", ["repository_id", "name", "manifest_id", "updated_at"], tag_rows)
    loader.load("manifest_children", ["parent_id", "child_digest"], child_rows)
    loader.load(
        "lifecycle_policies",
        ["repository_id", "policy_text", "updated_at"],
        [(repo_id, json.dumps(LIFECYCLE_POLICY), NOW)],
    )
    loader.finish(["repositories", "manifests"])
    return {"repo_id": repo_id, "images": len(manifest_rows), "tags": len(tag_rows), "indexes": n_index}


# ---- gc data -------------------------------------------------------------------------------------------------------
def generate_gc(registry: Registry, total: int, files: int = 1000) -> dict:
    loader = Loader(registry)
    repo_ids = create_repositories(loader, 10)
    old = NOW - 2 * 86400
    referenced = total * 90 // 100
    linked_only = total * 5 // 100
    per_manifest = 9
    n_manifests = (referenced + per_manifest - 1) // per_manifest
    payload = b'{"schemaVersion":2}'

    def blob_rows():
        for i in range(total):
            yield (fake_digest("c", i), 1000 + i % 5000, old)

    loader.load("blobs", ["digest", "size", "created_at"], blob_rows())
    loader.load(
        "manifests",
        ["id", "repository_id", "digest", "media_type", "payload", "image_size", "pushed_at"],
        ((m + 1, repo_ids[m % 10], fake_digest("d", m), OCI_MANIFEST, payload, 1, old) for m in range(n_manifests)),
    )

    def link_rows():
        for i in range(referenced):
            yield (repo_ids[(i // per_manifest) % 10], fake_digest("c", i), old)
        for i in range(referenced, referenced + linked_only):
            yield (repo_ids[i % 10], fake_digest("c", i), old)

    loader.load("repository_blobs", ["repository_id", "digest", "created_at"], link_rows())
    loader.load(
        "manifest_blobs",
        ["manifest_id", "digest"],
        ((i // per_manifest + 1, fake_digest("c", i)) for i in range(referenced)),
    )
    reviews = linked_only // 5
    loader.load(
        "gc_link_reviews",
        ["id", "repository_id", "digest", "queued_at", "reason"],
        (
            (k + 1, repo_ids[i % 10], fake_digest("c", i), old, "manifest-delete")
            for k, i in enumerate(range(referenced, referenced + reviews))
        ),
    )
    loader.finish(["repositories", "manifests", "gc_link_reviews"])
    storage = registry.ctx.storage
    unreferenced = range(referenced, total)
    for i in random.Random(3).sample(unreferenced, min(files, len(unreferenced))):
        storage.put_content(blob_path(fake_digest("c", i)), b"x" * 16)
    return {
        "blobs": total,
        "expected_links_deleted": linked_only,
        "expected_blobs_deleted": total - referenced,
        "manifests": n_manifests,
    }


# ---- measuring -----------------------------------------------------------------------------------------------------
def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_now_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(fn: Callable[[], object]) -> dict:
    python_gc.collect()
    _reset_rss_peak()
    rss_before = _rss_now_bytes()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_peak": _rss_peak_bytes(), "rss_before": rss_before, "result": result}


def traced(fn: Callable[[], object]) -> int:
    python_gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def child_lifecycle(kind: str, images: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(prefix="soko-bench-") as workdir, database(kind, workdir) as url:
        registry = open_registry(url, os.path.join(workdir, "data"))
        t0 = time.perf_counter()
        info = generate_lifecycle(registry, images)
        log(f"{kind}: generated {info} in {time.perf_counter() - t0:.1f}s")
        repo_id = info["repo_id"]
        policy = parse_lifecycle_policy(json.dumps(LIFECYCLE_POLICY))
        now = datetime.fromtimestamp(NOW, UTC)
        holder: dict = {}

        def records():
            with registry.ctx.db.read() as conn:
                holder["records"] = image_records(conn, repo_id)
            return len(holder["records"])

        def evaluation():
            return len(evaluate(policy, holder["records"], now))

        def runner():
            (run,) = LifecycleRunner(registry).run(dry_run=True)
            return len(run.expired)

        for name, fn in (("image_records", records), ("evaluate", evaluation), ("LifecycleRunner.run dry-run", runner)):
            m = measure(fn)
            m["py_peak"] = traced(fn)
            log(f"{kind}: {name}: {m['seconds']:.2f}s → {m['result']}")
            out.append({"operation": f"lifecycle: {name}", "database": kind, "rows": info["images"], **m})
        registry.close()
    return out


def child_gc(kind: str, total: int, trace: bool) -> list[dict]:
    out = []
    logging.getLogger("soko.gc").setLevel(logging.ERROR)  # blobs without files log a warning each
    for traced_pass in (False, True) if trace else (False,):
        with tempfile.TemporaryDirectory(prefix="soko-bench-") as workdir, database(kind, workdir) as url:
            registry = open_registry(url, os.path.join(workdir, "data"))
            t0 = time.perf_counter()
            info = generate_gc(registry, total)
            log(f"{kind}: generated {info} in {time.perf_counter() - t0:.1f}s")

            def dry(registry=registry):
                return registry.gc.run(grace_period=3600, dry_run=True, sweep_storage=False)

            def real(registry=registry):
                return registry.gc.run(grace_period=3600, sweep_storage=False)

            if traced_pass:
                peaks = {"gc: run dry-run": traced(dry), "gc: run": traced(real)}
                for row in out:
                    row["py_peak"] = peaks[row["operation"]]
                registry.close()
                continue
            for name, fn in (("gc: run dry-run", dry), ("gc: run", real)):
                m = measure(fn)
                report = m.pop("result")
                m["result"] = f"{report.links_deleted} links, {report.blobs_deleted} blobs"
                log(f"{kind}: {name}: {m['seconds']:.2f}s → {report.summary()}")
                ok = (report.links_deleted, report.blobs_deleted) == (
                    info["expected_links_deleted"],
                    info["expected_blobs_deleted"],
                )
                if not ok:
                    log(
                        f"{kind}: {name}: UNEXPECTED counts, wanted {info['expected_links_deleted']} links and "
                        f"{info['expected_blobs_deleted']} blobs"
                    )
                out.append({"operation": name, "database": kind, "rows": total, "ok": ok, **m})
            registry.close()
    return out


# ---- driver --------------------------------------------------------------------------------------------------------
def run_child(args: list[str]) -> list[dict]:
    proc = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| operation | database | rows | seconds | RSS peak MB | Python peak MB | result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        py = f"{r['py_peak'] / MB:.0f}" if r.get("py_peak") is not None else "—"
        lines.append(
            f"| {r['operation']} | {r['database']} | {r['rows']:,} | {r['seconds']:.2f} | {r['rss_peak'] / MB:.0f} "
            f"| {py} | {r['result']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--images", type=int, default=100_000, help="images in the lifecycle repository")
    parser.add_argument("--blobs", type=int, default=1_000_000, help="blob rows for GC")
    parser.add_argument("--only", choices=["lifecycle", "gc"], help="run one of the two")
    parser.add_argument(
        "--no-trace-gc", action="store_true", help="skip the second (tracemalloc) pass of the GC over regenerated rows"
    )
    parser.add_argument("--output", help="also write the rows as JSON here")
    parser.add_argument("--child", choices=["lifecycle", "gc"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if args.child:
        rows = (
            child_lifecycle(kinds[0], args.images)
            if args.child == "lifecycle"
            else child_gc(kinds[0], args.blobs, not args.no_trace_gc)
        )
        print(json.dumps(rows, default=str))
        return 0
    rows = []
    for what in ("lifecycle", "gc"):
        if args.only and args.only != what:
            continue
        for kind in kinds:
            log(f"== {what} on {kind}")
            extra = ["--no-trace-gc"] if args.no_trace_gc else []
            rows += run_child(
                ["--child", what, "--database", kind, "--images", str(args.images), "--blobs", str(args.blobs), *extra]
            )
    print(table(rows))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2, default=str))
    bad = [r for r in rows if r.get("ok") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
