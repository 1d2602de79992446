"""Advisory files as users import them, read into ``Advisory`` values: OSV JSON (one record, a directory of them,
or an ecosystem's ``all.zip``) and Alpine's secdb YAML (``packages[].pkg.secfixes``)."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from soko.errors import SokoError
from soko.scan.catalogers.python import normalise
from soko.scan.vulndb import severity

MAX_RECORD = 16 << 20  # one OSV record; the biggest real ones are a few hundred KiB
_CVE = re.compile(r"^CVE-\d{4}-\d{4,}$")


class AdvisoryFileInvalid(SokoError):
    """A file given to ``soko vulndb import`` is neither OSV JSON nor Alpine secdb YAML."""


@dataclass(slots=True)
class Affected:
    ecosystem: str  # OSV's: PyPI, Go, npm, Debian:12, Alpine:v3.20…
    name: str  # normalised as the matcher looks it up (PEP 503 for PyPI)
    ranges: list = field(default_factory=list)
    versions: list = field(default_factory=list)


@dataclass(slots=True)
class Advisory:
    id: str
    source: str  # osv:<ecosystem families> or alpine-secdb
    aliases: list[str]
    summary: str
    uri: str
    modified: float | None
    withdrawn: float | None
    severity: severity.Severity
    affected: list[Affected]
    merge: bool = False  # secdb: each file adds packages to the CVE's record instead of replacing it


def package_key(ecosystem: str, name: str) -> str:
    return normalise(name) if ecosystem == "PyPI" else name


def _time(value) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return when if when > 0 else None  # the Go database's "0001-01-01T00:00:00Z" means "not recorded"


def _strings(value) -> list[str]:
    """A list field's strings; anything else (a string would be read a character at a time) is none."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _list(value) -> list:
    return value if isinstance(value, list) else []


def from_osv(doc: dict, where: str) -> Advisory:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        raise AdvisoryFileInvalid(f"{where}: not an OSV record (no 'id')")
    affected = []
    for entry in _list(doc.get("affected")):
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or not package.get("ecosystem") or not package.get("name"):
            continue
        ecosystem = str(package["ecosystem"])
        affected.append(Affected(ecosystem, package_key(ecosystem, str(package["name"])),
                                 _list(entry.get("ranges")), _strings(entry.get("versions"))))
    families = sorted({a.ecosystem.split(":", 1)[0] for a in affected}) or ["none"]
    aliases = _strings(doc.get("aliases"))
    # osv.dev's distribution records (DEBIAN-CVE-…, UBUNTU-CVE-…, ALPINE-CVE-…) name their CVE in `upstream`, not
    # in `aliases`, as the OSV schema asks: a record with one upstream id is that vulnerability as the distribution
    # sees it, so its finding is named and merged by it. Several (a DSA or USN bundling CVEs) stay the record's own.
    upstream = _strings(doc.get("upstream"))
    if len(upstream) == 1 and upstream[0] not in aliases:
        aliases.append(upstream[0])
    refs = [r.get("url") for r in _list(doc.get("references")) if isinstance(r, dict) and r.get("type") == "ADVISORY"]
    return Advisory(
        id=doc["id"], source="osv:" + ",".join(families), aliases=aliases,
        summary=str(doc.get("summary") or doc.get("details") or "")[:2000],
        uri=str(refs[0] if refs else _default_uri(doc["id"], aliases))[:1024],
        modified=_time(doc.get("modified")), withdrawn=_time(doc.get("withdrawn")),
        severity=severity.from_osv(doc), affected=affected,
    )


def _default_uri(advisory_id: str, aliases: list[str]) -> str:
    cve = next((a for a in [advisory_id, *aliases] if _CVE.match(a)), None)
    if cve:
        return f"https://nvd.nist.gov/vuln/detail/{cve}"
    return f"https://osv.dev/vulnerability/{advisory_id}"


def from_secdb(doc: dict, where: str) -> Iterator[Advisory]:
    """One advisory per CVE (``ALPINE-CVE-…``, aliased to the CVE), fixed in the listed apk version."""
    release = str(doc.get("distroversion") or "")
    if not re.match(r"^v\d+\.\d+$", release):
        raise AdvisoryFileInvalid(f"{where}: Alpine secdb without a distroversion such as v3.20")
    ecosystem = f"Alpine:{release}"
    by_cve: dict[str, list[Affected]] = {}
    for item in _list(doc.get("packages")):
        pkg = item.get("pkg") if isinstance(item, dict) else None
        if not isinstance(pkg, dict) or not pkg.get("name") or not isinstance(pkg.get("secfixes") or {}, dict):
            continue
        for fixed, ids in (pkg.get("secfixes") or {}).items():
            fixed = str(fixed)
            for raw in _strings(ids):
                if not raw.split():
                    continue
                cve = raw.split()[0]
                if fixed == "0":
                    continue  # "0": the package was never affected in this release
                events = [{"introduced": "0"}, {"fixed": fixed}]
                by_cve.setdefault(cve, []).append(Affected(ecosystem, str(pkg["name"]),
                                                           [{"type": "ECOSYSTEM", "events": events}]))
    source = "alpine-secdb"  # one source whatever the release: a CVE's advisory spans the files that list it
    for cve, affected in by_cve.items():
        yield Advisory(f"ALPINE-{cve}", source, [cve] if _CVE.match(cve) else [], "",
                       _default_uri(cve, []), None, None, severity.Severity("UNDEFINED"), affected, merge=True)


def read_paths(paths: list[str]) -> Iterator[Advisory]:
    """Every advisory in the given files, directories (recursively: *.json, *.yaml, *.zip) and zips."""
    for path in paths:
        p = Path(path)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith((".json", ".yaml", ".yml", ".zip")):
                        yield from _read_file(Path(root) / name)
        elif p.exists():
            yield from _read_file(p)
        else:
            raise AdvisoryFileInvalid(f"{path}: no such file or directory")


def _read_file(path: Path) -> Iterator[Advisory]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir() or not info.filename.endswith((".json", ".yaml", ".yml")):
                    continue
                if info.file_size > MAX_RECORD:
                    raise AdvisoryFileInvalid(f"{path}:{info.filename} is {info.file_size} bytes")
                yield from _parse(archive.read(info), f"{path}:{info.filename}")
        return
    if path.stat().st_size > MAX_RECORD:
        raise AdvisoryFileInvalid(f"{path} is {path.stat().st_size} bytes (limit {MAX_RECORD})")
    yield from _parse(path.read_bytes(), str(path))


def _parse(data: bytes, where: str) -> Iterator[Advisory]:
    try:
        doc = json.loads(data)
    except RecursionError:  # arrays nested thousands deep: no advisory is
        raise AdvisoryFileInvalid(f"{where}: nested too deeply") from None
    except ValueError:
        try:
            doc = yaml.safe_load(data)
        except yaml.YAMLError:
            raise AdvisoryFileInvalid(f"{where}: neither JSON nor YAML") from None
        except RecursionError:
            raise AdvisoryFileInvalid(f"{where}: nested too deeply") from None
        if isinstance(doc, dict) and "packages" in doc:
            yield from from_secdb(doc, where)
            return
        raise AdvisoryFileInvalid(f"{where}: YAML that is not an Alpine secdb file") from None
    if isinstance(doc, list):  # some feeds ship arrays of records
        for item in doc:
            yield from_osv(item, where)
    else:
        yield from_osv(doc, where)
