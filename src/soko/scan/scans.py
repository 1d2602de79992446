"""Image scans as ECR's basic scanning shows them: requested (StartImageScan, or a push into a repository with
scanOnPush), run as a leased ``scan`` job — the image's stored inventory (read from its layers the first time) matched
against the imported advisories — and answered by DescribeImageScanFindings and DescribeImages.

A scan is one ``image_scans`` row per repository and image. Requesting it and queueing its job is one transaction,
so a committed request always runs (on whichever process takes the job, again if that process dies); its result and
the "ECR Image Scan" event are one transaction too.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa

from soko.errors import LimitExceeded, ManifestUnknown, RepositoryNotFound, Unsupported
from soko.kernel import scan_queue as queue
from soko.kernel.events import image_scan
from soko.meta.schema import advisories, image_scans, jobs, manifests, tags
from soko.meta.schema import repositories as repos
from soko.registry import Registry
from soko.registry.media_types import INDEXES
from soko.registry.models import RepoRef
from soko.scan.inventory import COMPLETE, Inventories
from soko.scan.vulndb import matcher

log = logging.getLogger(__name__)

KIND = queue.KIND
IN_PROGRESS, FAILED, UNSUPPORTED_IMAGE = queue.IN_PROGRESS, "FAILED", "UNSUPPORTED_IMAGE"
DESCRIPTIONS = {
    IN_PROGRESS: queue.IN_PROGRESS_DESCRIPTION,
    COMPLETE: "The scan was completed successfully.",
    UNSUPPORTED_IMAGE: "UnsupportedImageError: The operating system and/or package manager are not supported.",
}


@dataclass(frozen=True, slots=True)
class Scan:
    digest: str
    status: str
    description: str
    completed_at: float | None
    source_updated_at: float | None
    counts: dict[str, int]
    findings: list[dict]


class Scans:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.ctx = registry.ctx

    # ---- requests ----------------------------------------------------------------------------------------------
    def start(self, ref: RepoRef, image_id: dict) -> tuple[str, Scan]:
        """StartImageScan: the image's digest and its (IN_PROGRESS) scan; LimitExceeded within 24 hours of the last
        request for the same image."""
        [detail] = self.registry.images.describe_ids(ref, [image_id])
        if detail.media_type in INDEXES:
            raise Unsupported("The image type is not supported: an image index (manifest list) is not scanned; "
                              "scan each image it lists by its digest.")
        with self.ctx.transaction() as tx:
            repo_id = self._repo_id(tx.conn, ref)
            if not queue.request(tx, repo_id, detail.digest):
                raise LimitExceeded("The scan quota per image has been exceeded. Wait and try again.")
        scan = self._scan_row(repo_id, detail.digest)
        assert scan is not None  # requested just now
        return detail.digest, scan

    # ---- the job -----------------------------------------------------------------------------------------------
    def run(self, key: str) -> str | None:
        """Run scan ``key`` (an ``image_scans`` id): inventory (stored, or read from the layers), match, store."""
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(image_scans.c.manifest_digest, repos.c.account_id, repos.c.name)
                .join(repos, repos.c.id == image_scans.c.repository_id).where(image_scans.c.id == int(key))
            ).first()
        if row is None:
            return None  # the repository was deleted since
        ref = RepoRef(row.account_id, row.name)
        try:
            inventory = Inventories(self.registry).image(ref, row.manifest_digest)
        except (ManifestUnknown, RepositoryNotFound):
            self._finish(int(key), ref, row.manifest_digest, FAILED, "The image was deleted before it was scanned.",
                         [], None)
            return f"scan {key}: the image was deleted"
        if inventory.status != COMPLETE:
            status = UNSUPPORTED_IMAGE if inventory.status == UNSUPPORTED_IMAGE else FAILED
            self._finish(int(key), ref, row.manifest_digest, status,
                         f"{DESCRIPTIONS[UNSUPPORTED_IMAGE]} ({inventory.reason})" if status == UNSUPPORTED_IMAGE
                         else f"ScanFailed: {inventory.reason}", [], None)
            return f"scan {key}: {status}"
        if inventory.os is None and not inventory.packages:
            self._finish(int(key), ref, row.manifest_digest, UNSUPPORTED_IMAGE,
                         DESCRIPTIONS[UNSUPPORTED_IMAGE] + " (no operating system or package found)", [], None)
            return f"scan {key}: no packages"
        findings = [_render(f) for f in matcher.match(self.ctx.db, inventory)]
        with self.ctx.db.read() as conn:
            source_updated = conn.execute(sa.select(sa.func.max(advisories.c.imported_at))).scalar()
        self._finish(int(key), ref, row.manifest_digest, COMPLETE, DESCRIPTIONS[COMPLETE], findings, source_updated)
        return f"scan {key}: {len(findings)} finding(s) in {len(inventory.packages)} package(s)"

    def _finish(self, scan_id: int, ref: RepoRef, digest: str, status: str, description: str, findings: list[dict],
                source_updated: float | None) -> None:
        counts = dict(Counter(f["severity"] for f in findings))
        with self.ctx.transaction() as tx:
            done = tx.conn.execute(sa.update(image_scans).where(image_scans.c.id == scan_id).values(
                status=status, description=description[:4000], completed_at=tx.now,
                source_updated_at=source_updated or tx.now, counts=json.dumps(counts), findings=json.dumps(findings),
            )).rowcount
            # the job's row goes with its result: one-shot jobs must not pile up in `soko jobs` and /metrics (a
            # label pair per image); a new request inserts it again
            tx.conn.execute(sa.delete(jobs).where(jobs.c.kind == KIND, jobs.c.key == str(scan_id)))
            if done:
                tags_now = self._tags(tx.conn, scan_id, digest)
                event_status = COMPLETE if status == COMPLETE else FAILED
                tx.emit(image_scan(ref.account_id, self.ctx.settings.region, ref.name, digest, tags_now,
                                   event_status, counts))

    def rescan_stored(self) -> tuple[int, int]:
        """Match every completed scan's stored inventory again (after an advisory import): findings appear and
        disappear without reading a layer. Scans whose inventory is not stored in this version's form are left as
        they are (a StartImageScan after 24 hours rebuilds them). Returns (scans updated, scans left)."""
        t = image_scans.c
        with self.ctx.db.read() as conn:
            rows = conn.execute(sa.select(t.id, t.manifest_digest).where(t.status == COMPLETE)
                                .order_by(t.id)).all()
            source_updated = conn.execute(sa.select(sa.func.max(advisories.c.imported_at))).scalar()
        inventories = Inventories(self.registry)
        by_digest: dict[str, list[dict] | None] = {}
        updated = left = 0
        for row in rows:
            if row.manifest_digest not in by_digest:
                inventory = inventories.stored(row.manifest_digest)
                by_digest[row.manifest_digest] = (None if inventory is None else
                                                  [_render(f) for f in matcher.match(self.ctx.db, inventory)])
            findings = by_digest[row.manifest_digest]
            if findings is None:
                left += 1
                continue
            counts = dict(Counter(f["severity"] for f in findings))
            with self.ctx.transaction() as tx:
                tx.conn.execute(sa.update(image_scans).where(t.id == row.id, t.status == COMPLETE).values(
                    counts=json.dumps(counts), findings=json.dumps(findings),
                    source_updated_at=source_updated or tx.now))
            updated += 1
        return updated, left

    # ---- answers -----------------------------------------------------------------------------------------------
    def get(self, ref: RepoRef, digest: str) -> Scan | None:
        with self.ctx.db.read() as conn:
            repo_id = self._repo_id(conn, ref)
        return self._scan_row(repo_id, digest)

    def summaries(self, ref: RepoRef, digests: list[str]) -> dict[str, Scan]:
        """The scans of these images (for DescribeImages), findings left out."""
        t = image_scans.c
        out: dict[str, Scan] = {}
        with self.ctx.db.read() as conn:
            repo_id = self._repo_id(conn, ref)
            for i in range(0, len(digests), 500):
                for row in conn.execute(sa.select(t.manifest_digest, t.status, t.description, t.completed_at,
                                                  t.source_updated_at, t.counts)
                                        .where(t.repository_id == repo_id, t.manifest_digest.in_(digests[i:i + 500]))):
                    out[row.manifest_digest] = Scan(row.manifest_digest, row.status, row.description,
                                                    row.completed_at, row.source_updated_at, json.loads(row.counts),
                                                    [])
        return out

    def _scan_row(self, repo_id: int, digest: str) -> Scan | None:
        t = image_scans.c
        with self.ctx.db.read() as conn:
            row = conn.execute(sa.select(image_scans).where(t.repository_id == repo_id,
                                                            t.manifest_digest == digest)).first()
        if row is None:
            return None
        return Scan(digest, row.status, row.description, row.completed_at, row.source_updated_at,
                    json.loads(row.counts), json.loads(row.findings))

    def _repo_id(self, conn: sa.Connection, ref: RepoRef) -> int:
        return self.registry.repositories.id_for(conn, ref)

    @staticmethod
    def _tags(conn: sa.Connection, scan_id: int, digest: str) -> list[str]:
        repo_id = sa.select(image_scans.c.repository_id).where(image_scans.c.id == scan_id).scalar_subquery()
        return list(conn.execute(
            sa.select(tags.c.name).join(manifests, manifests.c.id == tags.c.manifest_id)
            .where(manifests.c.repository_id == repo_id, manifests.c.digest == digest).order_by(tags.c.name)
        ).scalars())


def _render(f: matcher.Finding) -> dict:
    """ECR's BASIC ImageScanFinding: name, description, uri, severity, attributes (key/value strings)."""
    attributes = [{"key": "package_version", "value": f.package.version},
                  {"key": "package_name", "value": f.package.name}]
    if f.cvss3_vector:
        attributes.append({"key": "CVSS3_VECTOR", "value": f.cvss3_vector})
    if f.cvss3_score is not None:
        attributes.append({"key": "CVSS3_SCORE", "value": str(f.cvss3_score)})
    attributes.append({"key": "package_type", "value": f.package.type})
    attributes.append({"key": "purl", "value": f.package.purl})
    if f.package.source_name and f.package.source_name != f.package.name:
        attributes.append({"key": "source_package", "value": f"{f.package.source_name} {f.package.source_version}"})
    if f.aliases:
        attributes.append({"key": "aliases", "value": ",".join(f.aliases)[:1024]})
    out = {"name": f.name, "uri": f.uri, "severity": f.severity, "attributes": attributes}
    if f.description:
        out["description"] = f.description
    return out

