"""Findings: an inventory's packages matched against the stored advisories. Advisories that name each other
(GHSA ↔ CVE ↔ PYSEC ↔ GO aliases) are one finding per package, named by its CVE when it has one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

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
    fixed_in: str = ""  # the lowest version that fixes every merged advisory ("" when one has no fix)
    modified: float | None = None  # the newest record's modification time


# os-release ID → the OSV ecosystem of its rpm advisories (binary package names, epoch:version-release)
RPM_ECOSYSTEMS = {"rocky": "Rocky Linux", "almalinux": "AlmaLinux"}


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
    if package.type == "rpm" and os_release is not None and os_release.id in RPM_ECOSYSTEMS:
        major = os_release.version_id.split(".")[0]
        return [(f"{RPM_ECOSYSTEMS[os_release.id]}:{major}", package.name, package.version)] if major else []
    if package.type == "gem":
        return [("RubyGems", package.name, package.version)]
    if package.type == "cargo":
        return [("crates.io", package.name, package.version)]
    if package.type == "golang" and package.version != "(devel)":
        return [("Go", package.name, package.version.removeprefix("v"))]
    return []


def match(db: Database, inventory: ImageInventory) -> list[Finding]:
    return match_many(db, [inventory])[0]


def match_many(db: Database, inventories: list[ImageInventory]) -> list[list[Finding]]:
    """Each inventory's findings, with one lookup of the advisories for all of them (a continuous rescan matches
    many images, whose packages overlap)."""
    wanted: dict[tuple[str, str], list[tuple[int, Package, str]]] = {}
    for index, inventory in enumerate(inventories):
        for package in inventory.packages:
            for ecosystem, name, version in lookups(inventory, package):
                wanted.setdefault((ecosystem, name), []).append((index, package, version))
    hits: dict[tuple[int, Package, str], set[str]] = {}
    fixes: dict[tuple[Package, str, str], tuple[str, str]] = {}  # (package, version, advisory) → ecosystem, fix
    for candidate in store.candidates(db, {name for _, name in wanted}):
        for index, package, version in wanted.get((candidate.ecosystem, candidate.name), []):
            is_affected, fix = _verdict(candidate.ecosystem, version, candidate.affected_text)
            if is_affected:
                hits.setdefault((index, package, version), set()).add(candidate.advisory_id)
                fixes[(package, version, candidate.advisory_id)] = (candidate.ecosystem, fix)
    rows = store.details(db, {i for ids in hits.values() for i in ids})
    out: list[list[Finding]] = [[] for _ in inventories]
    for (index, package, version), ids in hits.items():
        live = [rows[i] for i in sorted(ids) if i in rows and rows[i].withdrawn is None]
        for group in _alias_groups(live):
            finding = _finding(group, package, version)
            fixed = [fixes.get((package, version, row.id), ("", "")) for row in group]
            if all(value for _, value in fixed):  # every merged advisory names a fix: the highest of them fixes all
                finding.fixed_in = versions.highest(fixed[0][0], [value for _, value in fixed])
            finding.modified = max((row.modified for row in group if row.modified is not None), default=None)
            out[index].append(finding)
    for findings in out:
        findings.sort(key=lambda f: (RANK[f.severity], f.name, f.package.name, f.package.path))
    return out


@lru_cache(maxsize=1 << 16)
def _verdict(ecosystem: str, version: str, affected_text: str) -> tuple[bool, str]:
    """Whether ``version`` is affected per one stored ``affected`` entry (its JSON text), and the version that fixes
    it. Cached by the entry's text, so an advisory replaced by an import is evaluated afresh: images share most of
    their packages, and range evaluation (univers comparisons) was most of a rescan's time."""
    entry = json.loads(affected_text)
    if not versions.affected(ecosystem, version, entry):
        return False, ""
    return True, versions.fixed_in(ecosystem, version, entry)


@lru_cache(maxsize=1 << 14)
def _aliases(text: str) -> tuple[str, ...]:
    """An advisory's stored aliases (a JSON list), parsed once per text."""
    return tuple(json.loads(text))


def _alias_groups(rows: list) -> list[list]:
    """Advisories connected by an id or alias they share."""
    groups: list[tuple[set[str], list]] = []
    for row in rows:
        names = {row.id, *_aliases(row.aliases)}
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
    names = sorted({row.id for row in group} | {a for row in group for a in _aliases(row.aliases)})
    cve = next((n for n in names if n.startswith("CVE-")), None)
    worst = min(group, key=lambda r: (RANK[r.severity], r.cvss3_score is None))
    scored = next((r for r in sorted(group, key=lambda r: -(r.cvss3_score or 0)) if r.cvss3_score is not None), None)
    described = next((r for r in group if r.summary), group[0])
    return Finding(
        name=cve or ids[0], severity=worst.severity, uri=(worst.uri or described.uri), description=described.summary,
        package=package, package_version=version, advisory_ids=ids, aliases=[n for n in names if n != (cve or ids[0])],
        cvss3_score=scored.cvss3_score if scored else None, cvss3_vector=scored.cvss3_vector if scored else "",
    )
