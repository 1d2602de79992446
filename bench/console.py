"""Web console page times: the repository list at 10,000 repositories, an image with 1,000 tags, and the usage,
audit log, IAM, repository policy and event delivery pages.

Serves Soko in this process (the real HTTP engine, as the tests do) on a fresh PostgreSQL database (tests/databases,
127.0.0.1:5432) or SQLite (--sqlite), adds --repos repositories (rows written in bulk: the setup is not what is
measured), one image tagged --tags times, --audit audit rows, 20 IAM users, a month of transfer counts for 200
repositories and 50 dead letters, signs in as the root, and times each page over loopback with httpx: p50/p99 over
--rounds requests of the server time (the page's Server-Timing: routing, database, rendering) and of the time from
request to last byte (server time plus a loopback round trip and the client).

    .venv/bin/python bench/console.py [--repos 10000] [--tags 1000] [--rounds 50] [--sqlite]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


POLICY = (
    '{"Version": "2012-10-17", "Statement": [{"Sid": "ci", "Effect": "Allow", "Principal": "*", '
    '"Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]}'
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--audit", type=int, default=100_000)
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
    from soko.events.targets import Targets
    from soko.iam.directory import Directory
    from soko.iam.secrets import MasterKey
    from soko.meta import Database
    from soko.meta.schema import audit_events, event_outbox, repositories, transfer_usage
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
        from soko.iam.service import Identity

        identity = Identity(registry.ctx)
        identity.bootstrap_root()
        master = MasterKey.load(settings.master_key, settings.data_dir)
        identity_users = Directory(registry.ctx, master, identity.credentials)
        now = time.time()
        with db.write() as conn:
            conn.execute(
                sa.insert(repositories),
                [
                    {"account_id": account, "name": f"bench/team{i % 50:02d}/service-{i:05d}", "created_at": now - i}
                    for i in range(args.repos - 1)
                ],
            )
        with db.write() as conn:  # the audit log: decisions spread over a day, on 1,000 repositories
            rows = [
                {
                    "at": now - 86400 + i * 86400 / args.audit,
                    "event": "authz",
                    "principal": f"arn:aws:iam::{account}:user/u{i % 20}",
                    "action": ("ecr:BatchGetImage", "ecr:PutImage", "ecr:DescribeImages")[i % 3],
                    "resource": f"arn:aws:ecr:us-east-1:{account}:repository/bench/team00/service-{i % 1000:05d}",
                    "decision": "deny" if i % 10 == 0 else "allow",
                    "count": 1,
                }
                for i in range(args.audit)
            ]
            for start in range(0, len(rows), 10_000):
                conn.execute(sa.insert(audit_events), rows[start : start + 10_000])
            today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
            days = [today.replace(day=1) + datetime.timedelta(days=k) for k in range(min(4, today.day))]
            conn.execute(  # this month's pulls of 200 repositories, on up to 4 days
                sa.insert(transfer_usage),
                [
                    {
                        "account_id": account,
                        "repository_name": f"bench/team{i % 50:02d}/service-{i:05d}",
                        "endpoint": "public",
                        "network": "internet" if i % 2 else "same-region",
                        "operation": "blob_get",
                        "day": day,
                        "bytes_out": (i + 1) * (1 << 20),
                        "requests": i + 1,
                    }
                    for i in range(200)
                    for day in days
                ],
            )
        for i in range(20):
            identity_users.create_user(account, f"user-{i:02d}", "/", None)
        ref = RepoRef(account, "bench/tagged")
        registry.repositories.create(ref)
        digest = push_rich_image(registry, ref, "t0", label="bench")
        payload = registry.manifests.get(ref, digest).payload
        for i in range(1, args.tags):
            registry.manifests.put(ref, f"t{i}", payload, "application/vnd.oci.image.manifest.v1+json")
        registry.policies.set_repository_policy(ref, POLICY)
        settings.event_target_allow_cidrs = ["127.0.0.1/32"]
        targets = Targets(registry.ctx)
        targets.create(account, "bench-hook", "http://127.0.0.1:9/hook", max_attempts=1)  # discard: refused
        with db.read() as conn:
            outbox = conn.execute(sa.select(event_outbox.c.event_id).order_by(event_outbox.c.id).limit(50)).all()
        targets.redeliver(account, "bench-hook", [row.event_id for row in outbox])  # 50 letters to list
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
            ("usage (200 repositories with transfer, 6 months)", "/console/usage"),
            (f"audit log, newest 50 of {args.audit:,}", "/console/audit"),
            ("audit log, a repository's denials", "/console/audit?repository=bench/team00/service-00010&decision=deny"),
            ("IAM (20 users, root's keys)", "/console/iam"),
            ("repository policy", "/console/repo/bench/tagged/-/policy"),
            ("event delivery (50 dead letters)", "/console/events"),
        ]
        print(
            f"{args.repos} repositories, an image with {args.tags} tags, "
            f"{'SQLite' if args.sqlite else 'PostgreSQL'}, {args.rounds} requests each\n"
        )
        print("| page | server p50 ms | server p99 ms | client p50 ms | client p99 ms | bytes |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, path in cases:
            times, server_times = [], []
            size = 0
            for _ in range(args.rounds):
                start = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200, (path, r.status_code)
                server_times.append(float(r.headers["server-timing"].split("dur=")[1]))
                size = len(r.content)
            print(
                f"| {label} | {statistics.median(server_times):.1f} | {percentile(server_times, 0.99):.1f} "
                f"| {statistics.median(times):.1f} | {percentile(times, 0.99):.1f} | {size} |"
            )
        registry.close()


if __name__ == "__main__":
    main()
