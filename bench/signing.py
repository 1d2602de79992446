"""Managed signing's cost (issue 18), through the domain on SQLite in a temporary data dir: a push into a repository
that a signing rule matches against one that none matches (the push only adds the status row and the job), and one
run of the ``signing`` job (key unsealed, ES384 signature, two blobs and the signature manifest stored, status
COMPLETE) per image. Medians over the images of a round, then the spread of the medians across rounds.

    .venv/bin/python bench/signing.py --images 50 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.domain import push_image

from soko.config import load_settings
from soko.iam.secrets import MasterKey
from soko.kernel.signing_queue import KIND
from soko.meta.schema import jobs
from soko.registry import Registry
from soko.registry.models import RepoRef
from soko.signing.config import SigningConfigurations
from soko.signing.signer import Signer

ACCOUNT = "000000000000"
PROFILE = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/bench"


def one_round(images: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(overrides={"data_dir": tmp}, env={})
        registry = Registry.open(settings)
        try:
            master = MasterKey.load(settings.master_key, settings.data_dir)
            rule = {"signingProfileArn": PROFILE,
                    "repositoryFilters": [{"filter": "signed/*", "filterType": "WILDCARD_MATCH"}]}
            SigningConfigurations(registry.ctx, master).put(ACCOUNT, [rule])
            signer = Signer(registry, master)
            times: dict[str, list[float]] = {"plain": [], "signed": [], "sign": []}
            for i in range(images):
                for kind in ("plain", "signed"):
                    start = time.perf_counter()
                    push_image(registry, RepoRef(ACCOUNT, f"{kind}/app"), f"v{i}", [f"{kind}{i}".encode()])
                    times[kind].append(time.perf_counter() - start)
                with registry.ctx.db.read() as conn:
                    [key] = conn.execute(sa.select(jobs.c.key).where(jobs.c.kind == KIND)).scalars()
                start = time.perf_counter()
                signer.run(key)
                times["sign"].append(time.perf_counter() - start)
        finally:
            registry.close()
    return tuple(statistics.median(times[k]) * 1000 for k in ("plain", "signed", "sign"))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [one_round(args.images) for _ in range(args.rounds)]
    for index, label in enumerate(("push, no rule (ms)", "push, rule matches (ms)", "signing job run (ms)")):
        values = [r[index] for r in rounds]
        print(f"{label:26} median {statistics.median(values):7.2f}  rounds {', '.join(f'{v:.2f}' for v in values)}")
    plain, signed = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
    print(f"push overhead of a matching rule: {signed / plain:.2f}x")


if __name__ == "__main__":
    main()
