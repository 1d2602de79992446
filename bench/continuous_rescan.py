"""Continuous rescans after an advisory import: N images of continuously scanned repositories (ENHANCED scanning,
a CONTINUOUS_SCAN rule) re-matched from their stored inventories by the ``scan_rescan`` job's work,
``Scans.rescan_continuous`` — stored inventory read, matched against every advisory, ENHANCED findings rendered and
written with their counts, one transaction per scan. Target: 100 in under 5 s.

``python bench/continuous_rescan.py [--images 100] [--rounds 3] [--vulndata DIR] [--postgresql]`` (PostgreSQL: a
schema of its own in ``$SOKO_TEST_DATABASE_URL``'s database, dropped after)

Setup (not timed): the combined test image (Debian 12 minbase + old wheels + an npm tree + a Go binary; 99
packages, built and cached by ``tests/scan/images.py``) is pushed and inventoried once; its inventory is stored again
under N other digests (N distinct images to the matcher, which never sees that their packages are alike), each the
completed ENHANCED scan of one repository ``bench/cont-<i>``; every advisory of ``--vulndata`` (default: the shared
sample: PyPI, Go, Debian 12, Alpine) is imported. Each round then times one ``rescan_continuous()``; the reference
is what a rescan replaces, reading the image's layers again (``Inventories.image(refresh=True)``, one image).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vulndata", default="/work/shared/vulndata")
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    import sqlalchemy as sa
    from tests.databases import fresh_database
    from tests.scan import images

    from soko.config import Settings
    from soko.meta.schema import image_inventories, image_scans, repositories
    from soko.registry import Registry
    from soko.registry.models import RepoRef
    from soko.scan.inventory import Inventories
    from soko.scan.scans import Scans
    from soko.scan.vulndb import records, store

    lay = images.layout("combined-bench", [(images.debian_rootfs(),), (images.python_tree(),),
                                           (images.npm_tree(),), (images.go_tree(),)])
    with tempfile.TemporaryDirectory() as tmp, fresh_database(
            "postgresql" if args.postgresql else "sqlite", tmp) as database_url:
        registry = Registry.open(Settings(data_dir=tmp, database_url=database_url))
        ref = RepoRef("000000000000", "bench/source")
        digest = images.push_layout(registry, ref, lay)
        inventories = Inventories(registry)
        inventory = inventories.image(ref, digest)
        registry.scanning.put(ref.account_id, "ENHANCED", [{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [
            {"filter": "bench/cont-*", "filterType": "WILDCARD"}]}])
        imported = store.import_advisories(registry.ctx.db, records.read_paths([args.vulndata]))
        with registry.ctx.db.write() as conn:
            row = conn.execute(sa.select(image_inventories).where(image_inventories.c.manifest_digest == digest)).one()
            now = time.time()
            for i in range(args.images):
                fake = f"sha256:{i:064x}"
                inventory.digest = fake
                conn.execute(sa.insert(image_inventories).values(
                    {**row._mapping, "manifest_digest": fake, "document": inventory.to_json()}))
                repo_id = conn.execute(sa.insert(repositories).values(
                    account_id=ref.account_id, name=f"bench/cont-{i}", created_at=now, scan_on_push=False,
                )).inserted_primary_key[0]
                conn.execute(sa.insert(image_scans).values(
                    repository_id=repo_id, manifest_digest=fake, status="ACTIVE", scan_type="ENHANCED",
                    description="", requested_at=now, completed_at=now, counts="{}", findings="[]"))
        scans = Scans(registry)
        seconds, findings = [], 0
        for round_ in range(args.rounds):
            started = time.monotonic()
            if args.profile and round_ == args.rounds - 1:
                import cProfile
                import pstats
                with cProfile.Profile() as profile:
                    updated, queued = scans.rescan_continuous()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
            else:
                updated, queued = scans.rescan_continuous()
            seconds.append(time.monotonic() - started)
            assert updated == args.images and queued == 0, (updated, queued)
        with registry.ctx.db.read() as conn:
            for counts in conn.execute(sa.select(image_scans.c.counts)).scalars():
                findings += sum(json.loads(counts).values())
        started = time.monotonic()
        inventories.image(ref, digest, refresh=True)
        reread = time.monotonic() - started
        registry.close()
    print(f"{args.images} continuously scanned images ({len(inventory.packages) * args.images} packages, {findings} "
          f"findings) re-matched against {imported.records} advisories")
    print("| round | seconds |\n|---|---|")
    for i, s in enumerate(seconds, 1):
        print(f"| {i} | {s:.2f} |")
    print(f"\nmedian {statistics.median(seconds):.2f} s (spread {min(seconds):.2f} to {max(seconds):.2f}); reading one "
          f"image's layers again instead: {reread:.2f} s, times {args.images} = {reread * args.images:.0f} s")


if __name__ == "__main__":
    main()
