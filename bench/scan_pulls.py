"""Pulls while images are scanned: what ``scan_concurrency`` and the scan threads' lower CPU priority keep for pulls.

``python bench/scan_pulls.py [--seconds 8] [--pulls 2]``

In one process, as in a serving worker (scans run on its job runner's threads): ``--pulls`` threads pull an image
through the domain over and over — the manifest by tag, then its 4 MiB layer read whole (decrypted from storage,
as ``/v2/`` serves it) — and each pull's time is recorded; meanwhile 0, 1 or 2 threads inventory the combined test
image (Debian 12 minbase + wheels + npm + Go: its layers decompressed, applied and cataloged, ``refresh=True``),
one after another, with or without the niceness a scan thread takes (``soko.scan.scans._lower_priority``). Prints
pull p50 / p99 in ms and pulls per second for each case, and the scans finished.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--pulls", type=int, default=2)
    args = parser.parse_args()

    from tests.domain import push_image
    from tests.scan import images

    from soko.config import Settings
    from soko.registry import Registry
    from soko.registry.models import RepoRef
    from soko.scan.inventory import Inventories
    from soko.scan.scans import _lower_priority

    lay = images.layout("combined-bench", [(images.debian_rootfs(),), (images.python_tree(),),
                                           (images.npm_tree(),), (images.go_tree(),)])
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry.open(Settings(data_dir=tmp))
        scanned = RepoRef("000000000000", "bench/scanned")
        digest = images.push_layout(registry, scanned, lay)
        pulled = RepoRef("000000000000", "bench/pulled")
        push_image(registry, pulled, "v1", [os.urandom(4 << 20)])

        def pull() -> None:
            record = registry.manifests.get(pulled, "v1")
            layer = json.loads(record.payload)["layers"][0]["digest"]
            blob = registry.blobs.open(pulled, layer)
            with registry.blobs.reader(blob) as f:
                while f.read(1 << 20):
                    pass

        print("| scans running | scan niceness | pull p50 ms | pull p99 ms | pulls/s | scans done |\n"
              "|---|---|---|---|---|---|")
        def case(scanners: int, nice: bool) -> tuple[list[float], int]:
            stop = threading.Event()
            times: list[float] = []
            done = [0]

            def scan_loop() -> None:
                if nice:
                    _lower_priority()
                while not stop.is_set():
                    Inventories(registry).image(scanned, digest, refresh=True)
                    done[0] += 1

            def pull_loop() -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    pull()
                    times.append(time.perf_counter() - started)

            threads = [threading.Thread(target=scan_loop) for _ in range(scanners)]
            threads += [threading.Thread(target=pull_loop) for _ in range(args.pulls)]
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join()
            return times, done[0]

        for scanners, nice in ((0, False), (1, False), (1, True), (2, True)):
            times, done = case(scanners, nice)
            q = statistics.quantiles(times, n=100)
            print(f"| {scanners} | {'+10' if nice else '0'} | {q[49] * 1000:.1f} | {q[98] * 1000:.1f} | "
                  f"{len(times) / args.seconds:.0f} | {done} |")
        registry.close()


if __name__ == "__main__":
    main()
