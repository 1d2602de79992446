"""Push and pull throughput by encryption, side by side in one run on loopback:

* ``distribution`` — the reference (``/usr/bin/docker-registry``, filesystem storage);
* ``soko-plain`` — Soko as it was before encryption at rest (``--plain-ref``, default the parent of the commit that
  wired it in), run from a git worktree of that commit: the unencrypted baseline;
* ``soko-aes256``, ``soko-kms``, ``soko-kms-dsse`` — this Soko, one server, a repository of each encryption type
  (``KMS`` and ``KMS_DSSE`` with a customer key made through the KMS API), plaintext blob cache as configured by
  default (AES256 content only);
* ``soko-aes256-nocache`` — the same with the plaintext blob cache off (``plaintext_cache_bytes = 0``): every pull
  decrypts.

Each round pushes a distinct ``--mib`` blob to every target (POST + monolithic PUT) and pulls it twice (curl),
targets in a shuffled order (seeded by the round: a fixed rotation gave each target the same predecessor, whose
writeback and background work it then always paid for), after a ``sync``; medians over rounds, ratios paired per
round (min-max). Also the server's CPU seconds per GB (its process tree, from /proc: steadier than wall-clock on a
shared machine) and AES-256-GCM's raw speed on this machine (one core).
``python bench/encryption_http.py [--mib 256] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import boto3  # noqa: E402
from bench.encryption import _raw_gcm  # noqa: E402
from tests.e2e.servers import RegistryServer, soko_root_key, start_distribution, start_soko  # noqa: E402

from ops import Target, make_blob_file, pull_blob, push_monolithic  # noqa: E402
from procstat import cpu_seconds  # noqa: E402
from run import log, random_data  # noqa: E402

MiB = 1 << 20
WIRED_IN = "effbc58"  # "Encryption at rest wired in": its parent is the last Soko without it


def _target(server: RegistryServer) -> Target:
    return Target(server.host, server.auth_header())


def _kms_repositories(server: RegistryServer) -> None:
    key = soko_root_key(server.data_dir)
    session = dict(
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    kms, ecr = boto3.client("kms", **session), boto3.client("ecr", **session)
    key_arn = kms.create_key(Description="bench")["KeyMetadata"]["Arn"]
    for name, kind in (("bench/kms", "KMS"), ("bench/kms-dsse", "KMS_DSSE")):
        ecr.create_repository(repositoryName=name, encryptionConfiguration={"encryptionType": kind, "kmsKey": key_arn})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-ref", default=f"{WIRED_IN}^", help="git ref of the unencrypted Soko")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    gcm = _raw_gcm(512 * MiB) / 1e9
    log(f"AES-256-GCM raw: {gcm:.2f} GB/s")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.workdir)))
        plain_src = work / "plain-src"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(plain_src), args.plain_ref],
                       check=True, capture_output=True)
        stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(plain_src)],
                       capture_output=True)
        servers: dict[str, RegistryServer] = {}

        def register(name: str, server: RegistryServer) -> None:
            stack.callback(server.stop)
            servers[name] = server
            log(f"{name}: {server.url}")

        register("distribution", start_distribution(work / "distribution", cache="inmemory", access_log=False,
                                                    log_level="warn"))
        register("soko-plain", start_soko(work / "plain", env={"PYTHONPATH": str(plain_src / "src")}))
        register("soko", start_soko(work / "soko"))
        register("soko-nocache", start_soko(work / "nocache", env={"SOKO_PLAINTEXT_CACHE_BYTES": "0"}))
        _kms_repositories(servers["soko"])
        targets = {
            "distribution": (servers["distribution"], "bench/plain"),
            "soko-plain": (servers["soko-plain"], "bench/plain"),
            "soko-aes256": (servers["soko"], "bench/aes256"),
            "soko-aes256-nocache": (servers["soko-nocache"], "bench/aes256"),
            "soko-kms": (servers["soko"], "bench/kms"),
            "soko-kms-dsse": (servers["soko"], "bench/kms-dsse"),
        }
        base = random_data("encryption", args.mib * MiB)
        push: dict[str, list[float]] = defaultdict(list)
        pull: dict[str, list[float]] = defaultdict(list)
        push_cpu: dict[str, list[float]] = defaultdict(list)  # server CPU seconds per GB
        pull_cpu: dict[str, list[float]] = defaultdict(list)
        names = list(targets)
        for round_ in range(args.rounds):
            order = random.Random(round_).sample(names, len(names))
            for name in order:
                server, repo = targets[name]
                blob = make_blob_file(work / "blob", base, f"{name}/{round_}")
                os.sync()
                before = cpu_seconds(server.pid)
                seconds = push_monolithic(_target(server), repo, blob)
                push_cpu[name].append((cpu_seconds(server.pid) - before) / blob.size * 1e9)
                push[name].append(blob.size / seconds / 1e6)
                before = cpu_seconds(server.pid)
                pulls = [pull_blob(_target(server), repo, blob) for _ in range(2)]
                pull_cpu[name].append((cpu_seconds(server.pid) - before) / 2 / blob.size * 1e9)
                pull[name].append(blob.size / statistics.median(pulls) / 1e6)
                log(f"round {round_ + 1} {name}: push {push[name][-1]:.0f} MB/s, pull {pull[name][-1]:.0f} MB/s")
        os.unlink(work / "blob")

    def ratio(values: dict[str, list[float]], name: str, base: str) -> str:
        paired = [a / b for a, b in zip(values[name], values[base], strict=True)]
        return f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})"

    def spread(values: list[float], digits: int = 0) -> str:
        return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    print(f"{args.mib} MiB blob, {args.rounds} rounds, loopback, this machine ({os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}); AES-256-GCM raw {gcm:.2f} GB/s on one core\n")
    print("| target | push MB/s | pull MB/s | push vs soko-plain | pull vs soko-plain | push vs distribution | "
          "pull vs distribution | server CPU s/GB push | pull |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        print(f"| {name} | {spread(push[name])} | {spread(pull[name])} | {ratio(push, name, 'soko-plain')} | "
              f"{ratio(pull, name, 'soko-plain')} | {ratio(push, name, 'distribution')} | "
              f"{ratio(pull, name, 'distribution')} | {spread(push_cpu[name], 2)} | {spread(pull_cpu[name], 2)} |")


if __name__ == "__main__":
    main()
