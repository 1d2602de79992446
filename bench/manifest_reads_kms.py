"""Manifest reads of an AES256 repository against a KMS one (manifests sealed under the repository's key).

    .venv/bin/python bench/manifest_reads_kms.py                 # SQLite; --database postgresql for the local one
    SOKO_ROOT=/path/to/other/checkout .venv/bin/python bench/manifest_reads_kms.py   # the same on another version

In one process: a KMS key, an AES256 and a KMS repository with one image each; then, per repository, the median and
p99 µs of ``Manifests.get`` by tag when the manifest cache answers (the hot path) and after a write moved the
metadata generation (the database read, and for the KMS repository the key-state check and the row opened under its
keyspace key). Run it on two checkouts, alternating, several rounds: the figures of a loaded machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(os.environ.get("SOKO_ROOT") or Path(__file__).resolve().parent.parent)
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.databases import fresh_database  # noqa: E402
from tests.domain import push_image  # noqa: E402
from tests.kms.test_service import ROOT as ROOT_PRINCIPAL  # noqa: E402

from soko.config import Settings  # noqa: E402
from soko.iam.service import Identity  # noqa: E402
from soko.kms.service import KeyService  # noqa: E402
from soko.registry import Registry  # noqa: E402
from soko.registry.models import RepoRef  # noqa: E402

ACCOUNT = "000000000000"


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("-n", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, fresh_database(args.database, workdir, prefix="bench") as url:
        registry = Registry.open(Settings(data_dir=workdir, database_url=url, account_id=ACCOUNT))
        try:
            kms = KeyService(registry.ctx, Identity(registry.ctx))
            registry.encryption.attach(kms)
            key = kms.create_key(ROOT_PRINCIPAL, "bench")
            plain, keyed = RepoRef(ACCOUNT, "bench/aes256"), RepoRef(ACCOUNT, "bench/kms")
            registry.repositories.create(plain)
            registry.repositories.create(keyed, encryption_type="KMS", kms_key=key.arn)
            for ref in (plain, keyed):
                push_image(registry, ref, "latest", [os.urandom(64)])
            manifests = registry.manifests
            for ref in (plain, keyed):

                def uncached(ref: RepoRef = ref) -> None:
                    registry.ctx.generation.bump()  # what any write does: the next read goes to the database
                    manifests.get(ref, "latest")

                cached = timed(lambda ref=ref: manifests.get(ref, "latest"), args.n)
                after_write = timed(uncached, args.n // 4)
                name = ref.name.split("/")[1]
                print(f"{name} cached {cached[0]:.1f} {cached[1]:.1f} after-write {after_write[0]:.1f} "
                      f"{after_write[1]:.1f}")
        finally:
            registry.close()


if __name__ == "__main__":
    main()
