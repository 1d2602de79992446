"""The advisory tables: imports (``soko vulndb import``), status (``soko vulndb status``) and the lookups the
matcher makes. An import replaces each advisory it carries (OSV records are whole), except Alpine secdb's, whose
files each add the packages of one release and repository to the CVE's advisory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from soko.meta import Database
from soko.meta.schema import advisories, advisory_packages
from soko.scan.vulndb.records import Advisory

BATCH = 500


@dataclass(frozen=True, slots=True)
class ImportResult:
    records: int
    withdrawn: int
    packages: int
    seconds: float


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    records: int
    withdrawn: int
    newest_modified: float | None
    last_import: float


def import_advisories(db: Database, items: Iterable[Advisory], clock=time.time) -> ImportResult:
    started = time.monotonic()
    records = withdrawn = packages = 0
    batch: list[Advisory] = []
    for advisory in items:
        batch.append(advisory)
        if len(batch) >= BATCH:
            packages += _write(db, batch, clock())
            records, withdrawn = records + len(batch), withdrawn + sum(1 for a in batch if a.withdrawn)
            batch = []
    if batch:
        packages += _write(db, batch, clock())
        records, withdrawn = records + len(batch), withdrawn + sum(1 for a in batch if a.withdrawn)
    return ImportResult(records, withdrawn, packages, time.monotonic() - started)


def _write(db: Database, batch: list[Advisory], now: float) -> int:
    merged: dict[str, Advisory] = {}
    for advisory in batch:  # the same id twice in a batch: the later one wins (or adds, for secdb)
        earlier = merged.get(advisory.id)
        if earlier is not None and advisory.merge:
            advisory.affected = earlier.affected + advisory.affected
        merged[advisory.id] = advisory
    ids = list(merged)
    with db.write() as conn:
        replace = [i for i in ids if not merged[i].merge]
        if replace:
            conn.execute(sa.delete(advisory_packages).where(advisory_packages.c.advisory_id.in_(replace)))
        for advisory in merged.values():
            if advisory.merge:  # only the packages this file lists
                for a in advisory.affected:
                    conn.execute(sa.delete(advisory_packages).where(
                        advisory_packages.c.advisory_id == advisory.id,
                        advisory_packages.c.ecosystem == a.ecosystem, advisory_packages.c.name == a.name))
        conn.execute(sa.delete(advisories).where(advisories.c.id.in_(ids)))
        conn.execute(sa.insert(advisories), [{
            "id": a.id, "source": a.source[:255], "aliases": json.dumps(a.aliases), "summary": a.summary,
            "uri": a.uri, "severity": a.severity.label, "cvss3_score": a.severity.score,
            "cvss3_vector": a.severity.vector[:255], "modified": a.modified, "withdrawn": a.withdrawn,
            "imported_at": now,
        } for a in merged.values()])
        rows = [{"advisory_id": a.id, "ecosystem": p.ecosystem[:64], "name": p.name[:512],
                 "affected": json.dumps({"ranges": p.ranges, "versions": p.versions}, separators=(",", ":"))}
                for a in merged.values() for p in a.affected]
        if rows:
            conn.execute(sa.insert(advisory_packages), rows)
    return len(rows)


def status(db: Database) -> list[SourceStatus]:
    t = advisories.c
    with db.read() as conn:
        rows = conn.execute(
            sa.select(t.source, sa.func.count(), sa.func.count(t.withdrawn), sa.func.max(t.modified),
                      sa.func.max(t.imported_at)).group_by(t.source).order_by(t.source)
        ).all()
    return [SourceStatus(r[0], r[1], r[2], r[3], r[4]) for r in rows]


@dataclass(frozen=True, slots=True)
class Candidate:
    advisory_id: str
    ecosystem: str
    name: str
    affected_text: str  # JSON {"ranges": […], "versions": […]}, as stored (the matcher caches verdicts by it)

    @property
    def affected(self) -> dict:
        return json.loads(self.affected_text)


def candidates(db: Database, names: set[str]) -> Iterator[Candidate]:
    """Every package row naming one of ``names`` (the matcher filters by ecosystem)."""
    names_sorted = sorted(names)
    t = advisory_packages.c
    with db.read() as conn:
        for i in range(0, len(names_sorted), BATCH):
            chunk = names_sorted[i:i + BATCH]
            for row in conn.execute(sa.select(t.advisory_id, t.ecosystem, t.name, t.affected)
                                    .where(t.name.in_(chunk))):
                yield Candidate(row.advisory_id, row.ecosystem, row.name, row.affected)


def details(db: Database, ids: set[str]) -> dict[str, sa.Row]:
    out = {}
    ids_sorted = sorted(ids)
    with db.read() as conn:
        for i in range(0, len(ids_sorted), BATCH):
            for row in conn.execute(sa.select(advisories).where(advisories.c.id.in_(ids_sorted[i:i + BATCH]))):
                out[row.id] = row
    return out
