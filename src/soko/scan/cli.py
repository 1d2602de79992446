"""``soko vulndb import|status`` and ``soko scan``: advisory data in, findings out, from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

from soko.errors import SokoError


def add_parsers(sub, common: Callable, settings: Callable) -> None:
    vulndb = sub.add_parser("vulndb", help="import and inspect advisory databases (offline)")
    vulndb_sub = vulndb.add_subparsers(dest="vulndb_command", required=True)
    imp = vulndb_sub.add_parser("import", help="import OSV JSON (files, directories, all.zip) and Alpine secdb YAML")
    common(imp)
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--no-rescan", dest="rescan", action="store_false",
                     help="do not queue the rescan of continuously scanned images (default: queue it)")
    imp.set_defaults(func=lambda args: cmd_vulndb_import(args, settings(args)))
    st = vulndb_sub.add_parser("status", help="advisory sources: records, withdrawn, newest record, last import")
    common(st)
    st.add_argument("--format", choices=["text", "json"], default="text")
    st.set_defaults(func=lambda args: cmd_vulndb_status(args, settings(args)))

    scan = sub.add_parser("scan", help="inventory an image and match it against the imported advisories")
    common(scan)
    scan.add_argument("image", metavar="REPOSITORY:TAG|REPOSITORY@DIGEST")
    scan.add_argument("--account", help="the repository's account (default: the configured account)")
    scan.add_argument("--refresh", action="store_true", help="read the layers again even if an inventory is stored")
    scan.add_argument("--format", choices=["text", "json"], default="text")
    scan.set_defaults(func=lambda args: cmd_scan(args, settings(args)))

    sbom = sub.add_parser("sbom", help="write an image's SBOM (CycloneDX 1.6 or SPDX 2.3 JSON) from its inventory")
    common(sbom)
    sbom.add_argument("image", metavar="REPOSITORY:TAG|REPOSITORY@DIGEST")
    sbom.add_argument("--format", choices=["cyclonedx", "spdx"], default="cyclonedx")
    sbom.add_argument("--account", help="the repository's account (default: the configured account)")
    sbom.add_argument("--output", "-o", metavar="FILE", help="write the document here (default: standard output)")
    sbom.add_argument("--attach", action="store_true",
                      help="also push it beside the image as an OCI artifact whose subject is the image (the "
                           "referrers API and ListImageReferrers list it)")
    sbom.set_defaults(func=lambda args: cmd_sbom(args, settings(args)))


def _database(settings):
    from soko import private
    from soko.meta import Database

    private.data_dir(settings.data_dir)
    db = Database(settings.effective_database_url)
    try:
        db.migrate()
    except BaseException:
        db.dispose()
        raise
    return db


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def cmd_vulndb_import(args: argparse.Namespace, settings) -> int:
    from soko.scan.vulndb import records, store

    db = _database(settings)
    try:
        result = store.import_advisories(db, records.read_paths(args.paths))
    except SokoError as exc:
        print(f"soko vulndb import: {exc.message}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(f"vulndb: imported {result.records} advisories ({result.withdrawn} withdrawn, {result.packages} "
          f"affected packages) in {result.seconds:.1f}s")
    if args.rescan:
        from soko.kernel.job_queue import enqueue
        from soko.scan.scans import RESCAN_KIND

        db = _database(settings)
        try:
            with db.write() as conn:  # a durable request: the server's job runner (any node) carries it out once
                enqueue(db, conn, RESCAN_KIND, "advisories", time.time())
        finally:
            db.dispose()
        print("vulndb: queued the rescan of continuously scanned images (ENHANCED scanning, CONTINUOUS_SCAN rules):"
              " a running Soko re-matches their stored inventories (soko jobs shows it)")
    return 0


def cmd_vulndb_status(args: argparse.Namespace, settings) -> int:
    from soko.scan.vulndb import store

    db = _database(settings)
    try:
        rows = store.status(db)
    finally:
        db.dispose()
    if args.format == "json":
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"{'SOURCE':<28} {'RECORDS':>8} {'WITHDRAWN':>9}  {'NEWEST RECORD':<20} LAST IMPORT")
    for r in rows:
        print(f"{r.source:<28} {r.records:>8} {r.withdrawn:>9}  {_when(r.newest_modified):<20} {_when(r.last_import)}")
    if not rows:
        print("vulndb: no advisories imported (soko vulndb import PATH…)")
    return 0


def _image(text: str) -> tuple[str, str]:
    """``REPOSITORY:TAG`` or ``REPOSITORY@DIGEST`` (a bare repository: its ``latest``)."""
    name, sep, reference = text.partition("@")
    if not sep:
        name, sep, reference = text.rpartition(":")
        if not sep or "/" in reference:
            name, reference = text, "latest"
    return name, reference


def cmd_sbom(args: argparse.Namespace, settings) -> int:
    from soko.registry import Registry
    from soko.registry.models import RepoRef
    from soko.scan.sbom import Sboms

    name, reference = _image(args.image)
    registry = Registry.open(settings)
    try:
        sbom = Sboms(registry).of(RepoRef(args.account or settings.account_id, name), reference, args.format,
                                  attach=args.attach)
    except SokoError as exc:
        print(f"soko sbom: {exc.message}", file=sys.stderr)
        return 1
    finally:
        registry.close()
    if args.output:
        _write(args.output, sbom.document)
    else:
        sys.stdout.write(sbom.document.decode())
        sys.stdout.write("\n")
    if sbom.referrer:
        print(f"soko sbom: attached to {sbom.image} as {sbom.referrer} ({sbom.media_type})", file=sys.stderr)
    return 0


def _write(path: str, data: bytes) -> None:
    """Whole or not at all (a temporary file renamed into place)."""
    import os

    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def cmd_scan(args: argparse.Namespace, settings) -> int:
    from soko.registry import Registry
    from soko.registry.models import RepoRef
    from soko.scan.inventory import Inventories
    from soko.scan.vulndb import matcher

    name, reference = _image(args.image)
    registry = Registry.open(settings)
    try:
        ref = RepoRef(args.account or settings.account_id, name)
        inventories = Inventories(registry).of(ref, reference, refresh=args.refresh)
        results = [(inv, matcher.match(registry.ctx.db, inv)) for inv in inventories]
    except SokoError as exc:
        print(f"soko scan: {exc.message}", file=sys.stderr)
        return 1
    finally:
        registry.close()
    if args.format == "json":
        print(json.dumps([{"inventory": json.loads(inv.to_json()),
                           "findings": [_finding_json(f) for f in findings]} for inv, findings in results], indent=2))
        return 0
    for inv, findings in results:
        os_name = f"{inv.os.id} {inv.os.version_id}".strip() if inv.os else "unknown OS"
        print(f"{inv.digest} {inv.platform} {inv.status}{': ' + inv.reason if inv.reason else ''} — {os_name}, "
              f"{len(inv.packages)} packages, {len(findings)} findings")
        for note in inv.notes:
            print(f"  note: {note}")
        for f in findings:
            print(f"  {f.severity:<13} {f.name:<22} {f.package.name} {f.package.version}  {f.uri}")
    return 0


def _finding_json(f) -> dict:
    return {"name": f.name, "severity": f.severity, "uri": f.uri, "description": f.description,
            "package": f.package.name, "package_version": f.package.version, "purl": f.package.purl,
            "advisories": f.advisory_ids, "aliases": f.aliases, "cvss3_score": f.cvss3_score,
            "cvss3_vector": f.cvss3_vector, "fixed_in": f.fixed_in}
