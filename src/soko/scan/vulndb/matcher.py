"""Findings: an inventory's packages matched against the stored advisories. Advisories that name each other
(GHSA ↔ CVE ↔ PYSEC ↔ GO aliases) are one finding per package, named by its CVE when it has one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from soko.meta import Database
from soko.scan.catalogers.python import normalise
from soko.scan.model import ImageInventory, Package
from soko.scan.vulndb import store, versions
from soko.scan.vulndb.severity import RANK


@dataclass(slots=True)
class Finding:
    name: str  # the CVE id when there is one, else the advisory's id
    severity: str
    uri: str
    description: str
    package: Package
    package_version: str  # the version compared (a deb's source version)
    advisory_ids: list[str] = field(default_factory=list)  # every advisory merged into this finding
    aliases: list[str] = field(default_factory=list)
    cvss3_score: float | None = None
    cvss3_vector: str = ""


def lookups(inventory: ImageInventory, package: Package) -> list[tuple[str, str, str]]:
    """(ecosystem, name, version) the advisories would name this package by; the first matching ecosystem wins."""
    os_release = inventory.os
    if package.type == "deb" and os_release is not None:
        name, version = package.source_name or package.name, package.source_version or package.version
        if os_release.id == "debian" and os_release.version_id:
            return [(f"Debian:{os_release.version_id.split('.')[0]}", name, version)]
        if os_release.id == "ubuntu" and os_release.version_id:
            return [(f"Ubuntu:{os_release.version_id}", name, version),
                    (f"Ubuntu:{os_release.version_id}:LTS", name, version)]
        return []
    if package.type == "apk" and os_release is not None and os_release.id == "alpine":
        release = ".".join(os_release.version_id.split(".")[:2])
        return [(f"Alpine:v{release}", package.source_name or package.name, package.version)]
    if package.type == "pypi":
        return [("PyPI", normalise(package.name), package.version)]
    if package.type == "npm":
        return [("npm", package.name, package.version)]
    if package.type == "maven":
        return [("Maven", package.name, package.version)]  # OSV names Maven packages group:artifact
    if package.type == "golang" and package.version != "(devel)":
        return [("Go", package.name, package.version.removeprefix("v"))]
    return []


def match(db: Database, inventory: ImageInventory) -> list[Finding]:
    wanted: dict[tuple[str, str], list[tuple[Package, str]]] = {}
    for package in inventory.packages:
        for ecosystem, name, version in lookups(inventory, package):
            wanted.setdefault((ecosystem, name), []).append((package, version))
    hits: dict[tuple[Package, str], set[str]] = {}
    for candidate in store.candidates(db, {name for _, name in wanted}):
        for package, version in wanted.get((candidate.ecosystem, candidate.name), []):
            if versions.affected(candidate.ecosystem, version, candidate.affected):
                hits.setdefault((package, version), set()).add(candidate.advisory_id)
    rows = store.details(db, {i for ids in hits.values() for i in ids})
    findings = []
    for (package, version), ids in hits.items():
        live = [rows[i] for i in sorted(ids) if i in rows and rows[i].withdrawn is None]
        for group in _alias_groups(live):
            findings.append(_finding(group, package, version))
    findings.sort(key=lambda f: (RANK[f.severity], f.name, f.package.name, f.package.path))
    return findings


def _alias_groups(rows: list) -> list[list]:
    """Advisories connected by an id or alias they share."""
    groups: list[tuple[set[str], list]] = []
    for row in rows:
        names = {row.id, *json.loads(row.aliases)}
        joined = [g for g in groups if g[0] & names]
        merged_names, merged_rows = set(names), [row]
        for g in joined:
            merged_names |= g[0]
            merged_rows = g[1] + merged_rows
            groups.remove(g)
        groups.append((merged_names, merged_rows))
    return [rows for _, rows in groups]


def _finding(group: list, package: Package, version: str) -> Finding:
    ids = sorted({row.id for row in group})
    names = sorted({row.id for row in group} | {a for row in group for a in json.loads(row.aliases)})
    cve = next((n for n in names if n.startswith("CVE-")), None)
    worst = min(group, key=lambda r: (RANK[r.severity], r.cvss3_score is None))
    scored = next((r for r in sorted(group, key=lambda r: -(r.cvss3_score or 0)) if r.cvss3_score is not None), None)
    described = next((r for r in group if r.summary), group[0])
    return Finding(
        name=cve or ids[0], severity=worst.severity, uri=(worst.uri or described.uri), description=described.summary,
        package=package, package_version=version, advisory_ids=ids, aliases=[n for n in names if n != (cve or ids[0])],
        cvss3_score=scored.cvss3_score if scored else None, cvss3_vector=scored.cvss3_vector if scored else "",
    )
