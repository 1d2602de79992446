"""Web console page times: the repository list at 10,000 repositories and an image with 1,000 tags.

Serves Soko in this process (the real HTTP engine, as the tests do) on a fresh PostgreSQL database (tests/databases,
127.0.0.1:5432) or SQLite (--sqlite), adds --repos repositories (rows written in bulk: the setup is not what is
measured) and one image tagged --tags times, signs in as the root, and times each page over loopback with httpx:
p50/p99 over --rounds requests (the time from request to last byte; server time plus a loopback round trip).

    .venv/bin/python bench/console.py [--repos 10000] [--tags 1000] [--rounds 50] [--sqlite]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()

    import contextlib
    import logging

    import httpx
    import sqlalchemy as sa
    from tests.conftest import ROOT_KEY_ID, ROOT_SECRET, serve
    from tests.console.helpers import push_rich_image, sign_in
    from tests.databases import fresh_database

    from soko.config import load_settings
    from soko.meta import Database
    from soko.meta.schema import repositories
    from soko.registry import Registry
    from soko.registry.models import RepoRef
    from soko.storage import FilesystemDriver

    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp}/metadata.db" if args.sqlite else stack.enter_context(fresh_database("postgresql", tmp))
        settings = load_settings(
            overrides={
                "data_dir": os.path.join(tmp, "data"),
                "database_url": url,
                "root_access_key_id": ROOT_KEY_ID,
                "root_secret_access_key": ROOT_SECRET,
                "access_log": "off",
            },
            env={},
        )
        os.makedirs(settings.data_dir, exist_ok=True)
        db = Database(settings.effective_database_url, pool_size=4)
        db.migrate()
        registry = Registry(settings, db, FilesystemDriver(settings.blob_root))
        account = settings.account_id
        now = time.time()
        with db.write() as conn:
            conn.execute(
                sa.insert(repositories),
                [
                    {"account_id": account, "name": f"bench/team{i % 50:02d}/service-{i:05d}", "created_at": now - i}
                    for i in range(args.repos - 1)
                ],
            )
        ref = RepoRef(account, "bench/tagged")
        registry.repositories.create(ref)
        digest = push_rich_image(registry, ref, "t0", label="bench")
        payload = registry.manifests.get(ref, digest).payload
        for i in range(1, args.tags):
            registry.manifests.put(ref, f"t{i}", payload, "application/vnd.oci.image.manifest.v1+json")
        running = stack.enter_context(serve(settings, registry))
        client = stack.enter_context(httpx.Client(base_url=running.url, timeout=60))
        assert sign_in(client, ROOT_KEY_ID, ROOT_SECRET).status_code == 303

        deep = "/console/repositories"
        for _ in range(100):  # page 101: the keyset position after 5,000 repositories
            page = client.get(deep)
            marker = page.text.find('rel="next" href="')
            if marker < 0:
                break
            deep = page.text[marker + len('rel="next" href="') :].split('"', 1)[0].replace("&amp;", "&")
        cases = [
            ("repository list, first page (name order)", "/console/repositories"),
            ("repository list, page 101 (keyset)", deep),
            ("repository list, newest first", "/console/repositories?sort=-created"),
            ("repository list, search 'service-09'", "/console/repositories?q=service-09"),
            (f"repository page (image with {args.tags} tags)", "/console/repo/bench/tagged"),
            (f"image page ({args.tags} tags)", f"/console/repo/bench/tagged/-/image/{digest}"),
        ]
        print(
            f"{args.repos} repositories, an image with {args.tags} tags, "
            f"{'SQLite' if args.sqlite else 'PostgreSQL'}, {args.rounds} requests each\n"
        )
        print("| page | p50 ms | p99 ms | bytes |")
        print("|---|---:|---:|---:|")
        for label, path in cases:
            times = []
            size = 0
            for _ in range(args.rounds):
                start = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200, (path, r.status_code)
                size = len(r.content)
            print(f"| {label} | {statistics.median(times):.1f} | {percentile(times, 0.99):.1f} | {size} |")
        registry.close()


if __name__ == "__main__":
    main()
