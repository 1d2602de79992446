"""Image inventory against syft on the same OCI layouts, and rescans of stored inventories.
``python bench/scan.py [--vulndata DIR] [--rescans 100]``

Images (built once and cached by ``tests/scan/images.py``): ``debian`` (debootstrap --variant=minbase bookworm, one
layer written by umoci) and ``combined`` (that, plus old Python wheels, an npm tree, a Go binary, a whiteout and an
opaque layer). For each, in a child process: Soko's inventory (``Inventories.image(refresh=True)`` on a registry in
a temp dir: the layers are read from storage, decompressed, applied and cataloged) — wall time and the peak
resident set during it (VmHWM reset after the push); then ``syft scan oci-dir:… -o syft-json`` — wall time and
peak resident set (``wait4``). Rescans: ``--rescans`` stored inventories (copies of the combined image's under other
digests) matched against every advisory in ``--vulndata`` (default: the project's shared sample), as a scan does
after an advisory import: stored inventory read, matched, findings built. The markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def _hwm_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _registry(tmp: str):
    from soko.config import Settings
    from soko.registry import Registry

    return Registry.open(Settings(data_dir=tmp))


def soko_inventory(layout: str) -> dict:
    from tests.scan import images

    from soko.registry.models import RepoRef
    from soko.scan.inventory import Inventories

    with tempfile.TemporaryDirectory() as tmp:
        registry = _registry(tmp)
        ref = RepoRef("000000000000", "bench/scan")
        digest = images.push_layout(registry, ref, Path(layout))
        _hwm_reset()
        started = time.monotonic()
        inventory = Inventories(registry).image(ref, digest, refresh=True)
        seconds = time.monotonic() - started
        registry.close()
    return {"seconds": seconds, "rss_mib": _hwm_mib(), "packages": len(inventory.packages)}


def syft_inventory(layout: str) -> dict:
    syft = Path(sys.executable).parent / "syft"
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
    started = time.monotonic()
    proc = subprocess.Popen([str(syft), "scan", f"oci-dir:{layout}", "-o", "syft-json", "-q"],
                            stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    return {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024, "packages": len(json.loads(out)["artifacts"])}


def rescans(layout: str, vulndata: str, count: int) -> dict:
    import sqlalchemy as sa
    from tests.scan import images

    from soko.meta.schema import image_inventories
    from soko.registry.models import RepoRef
    from soko.scan.inventory import Inventories
    from soko.scan.vulndb import matcher, records, store

    with tempfile.TemporaryDirectory() as tmp:
        registry = _registry(tmp)
        ref = RepoRef("000000000000", "bench/scan")
        digest = images.push_layout(registry, ref, Path(layout))
        inventories = Inventories(registry)
        inventory = inventories.image(ref, digest)
        imported = store.import_advisories(registry.ctx.db, records.read_paths([vulndata]))
        with registry.ctx.db.write() as conn:
            row = conn.execute(sa.select(image_inventories).where(image_inventories.c.manifest_digest == digest)).one()
            copies = []
            for i in range(count):
                fake = f"sha256:{i:064x}"
                inventory.digest = fake
                copies.append({**row._mapping, "manifest_digest": fake, "document": inventory.to_json()})
            conn.execute(sa.insert(image_inventories), copies)
        started = time.monotonic()
        findings = 0
        for i in range(count):
            stored = inventories.stored(f"sha256:{i:064x}")
            findings += len(matcher.match(registry.ctx.db, stored))
        seconds = time.monotonic() - started
        registry.close()
    return {"seconds": seconds, "findings": findings, "advisories": imported.records,
            "packages": len(inventory.packages) * count}


def _child(kind: str, *args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vulndata", default="/work/shared/vulndata")
    parser.add_argument("--rescans", type=int, default=100)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"soko": soko_inventory, "syft": syft_inventory, "rescans": rescans}[kind]
        print(json.dumps(fn(*[int(x) if x.isdigit() else x for x in rest])))
        return
    from tests.scan import images

    layouts = {
        "debian (88 debs, 1 layer)": images.layout("debian", [(images.debian_rootfs(),)]),
        "combined (6 layers)": images.layout("combined-bench", [
            (images.debian_rootfs(),), (images.python_tree(),), (images.npm_tree(),), (images.go_tree(),)]),
    }
    print("| image | tool | seconds | peak RSS MiB | packages |\n|---|---|---|---|---|")
    for name, layout in layouts.items():
        size = sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file()) / 2**20
        for tool in ("soko", "syft"):
            r = _child(tool, layout)
            print(f"| {name}, {size:.0f} MiB | {tool} | {r['seconds']:.2f} | {r['rss_mib']:.0f} | {r['packages']} |")
    r = _child("rescans", layouts["combined (6 layers)"], args.vulndata, args.rescans)
    print(f"\n{args.rescans} stored inventories ({r['packages']} packages) matched against {r['advisories']} "
          f"advisories: {r['seconds']:.2f} s, {r['findings']} findings")


if __name__ == "__main__":
    main()
