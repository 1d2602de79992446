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
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from soko.errors import ImageArchived, LimitExceeded, ManifestUnknown, RepositoryNotFound, Unsupported
from soko.kernel import job_queue, scan_rules
from soko.kernel import scan_queue as queue
from soko.kernel.events import image_scan, inspector_scan
from soko.kernel.scan_rules import ENHANCED
from soko.meta.schema import advisories, image_scans, jobs, manifests, tags
from soko.meta.schema import repositories as repos
from soko.registry import Registry
from soko.registry.media_types import INDEXES
from soko.registry.models import RepoRef
from soko.registry.settings_store import ConfigurationInvalid
from soko.scan import findings
from soko.scan.inventory import COMPLETE, Inventories
from soko.scan.model import ImageInventory
from soko.scan.vulndb import matcher

log = logging.getLogger(__name__)

KIND, RULES_KIND, RESCAN_KIND = queue.KIND, queue.RULES_KIND, queue.RESCAN_KIND
IN_PROGRESS, FAILED, UNSUPPORTED_IMAGE, ACTIVE = queue.IN_PROGRESS, "FAILED", "UNSUPPORTED_IMAGE", "ACTIVE"
RESCAN_BATCH = 100  # continuous rescans: images matched together (one advisory lookup for their packages)
MAX_ATTEMPTS = 5  # failed runs in a row before a scan is FAILED (the job runner backs off between them)
SCAN_NICENESS = 10  # added to a scan thread's niceness (0 normal, 19 lowest)
DESCRIPTIONS = {
    IN_PROGRESS: queue.IN_PROGRESS_DESCRIPTION,
    COMPLETE: "The scan was completed successfully.",
    ACTIVE: "Continuous scan is selected for image.",
    UNSUPPORTED_IMAGE: "UnsupportedImageError: The operating system and/or package manager are not supported.",
}


@dataclass(frozen=True, slots=True)
class Scan:
    digest: str
    status: str
    scan_type: str  # BASIC | ENHANCED: which findings (findings | enhancedFindings)
    description: str
    completed_at: float | None
    source_updated_at: float | None
    counts: dict[str, int]
    findings: list[dict]


class Scans:
    def __init__(self, registry: Registry, stopping: Callable[[], bool] = lambda: False) -> None:
        self.registry = registry
        self.ctx = registry.ctx
        self.stopping = stopping  # the job runner's: long runs stop between repositories or images

    # ---- requests ----------------------------------------------------------------------------------------------
    def start(self, ref: RepoRef, image_id: dict) -> tuple[str, Scan]:
        """StartImageScan: the image's digest and its (IN_PROGRESS) scan; LimitExceeded within 24 hours of the last
        request for the same image."""
        [detail] = self.registry.images.describe_ids(ref, [image_id])
        if detail.media_type in INDEXES:
            raise Unsupported("The image type is not supported: an image index (manifest list) is not scanned; "
                              "scan each image it lists by its digest.")
        if detail.status != "ACTIVE":
            raise ImageArchived(
                f"The image {detail.digest} is archived and cannot be scanned; restore it (update-image-storage-class "
                "--target-storage-class STANDARD) and scan it once its status is ACTIVE."
            )
        with self.ctx.transaction() as tx:
            repo_id = self._repo_id(tx.conn, ref)
            if scan_rules.configuration(tx.conn, ref.account_id)[0] == ENHANCED:
                raise ConfigurationInvalid(
                    "StartImageScan starts basic scans, and this registry's scanning configuration is ENHANCED: "
                    "its images are scanned on push and, in CONTINUOUS_SCAN repositories, again whenever advisory "
                    "data is imported, as its rules say (get-registry-scanning-configuration).")
            if not queue.request(tx, repo_id, detail.digest):
                raise LimitExceeded("The scan quota per image has been exceeded. Wait and try again.")
        scan = self._scan_row(repo_id, detail.digest)
        assert scan is not None  # requested just now
        return detail.digest, scan

    # ---- the job -----------------------------------------------------------------------------------------------
    def run(self, key: str) -> str | None:
        """Run scan ``key`` (an ``image_scans`` id) on a scan thread, which has a lower CPU priority; the job
        runner's thread, shared with other kinds, waits for it and keeps its own priority."""
        return self._threads().submit(self._run, key).result()

    def _threads(self) -> ThreadPoolExecutor:
        global _SCAN_THREADS
        with _SCAN_THREADS_LOCK:  # made on first use, so after the supervisor forked this worker
            if _SCAN_THREADS is None:
                _SCAN_THREADS = ThreadPoolExecutor(max(self.ctx.settings.scan_concurrency, 1), "soko-scan",
                                                   initializer=_lower_priority)
            return _SCAN_THREADS

    def _run(self, key: str) -> str | None:
        """Inventory (stored, or read from the layers), match, store."""
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(image_scans.c.manifest_digest, image_scans.c.scan_type, image_scans.c.findings,
                          image_scans.c.requested_at, repos.c.account_id, repos.c.name)
                .join(repos, repos.c.id == image_scans.c.repository_id).where(image_scans.c.id == int(key))
            ).first()
        if row is None:
            return None  # the repository was deleted since
        ref = RepoRef(row.account_id, row.name)
        done = _Done(int(key), ref, row.manifest_digest, row.scan_type, row.requested_at)
        try:
            return self._scan(key, row, ref, done)
        except Exception as exc:
            # Anything unforeseen (a layer gone from storage, a cataloger bug): retried with the runner's backoff,
            # then FAILED with the reason, so a waiter sees the end instead of IN_PROGRESS for good.
            with self.ctx.db.read() as conn:
                failed_before = job_queue.attempts(conn, KIND, key)
            error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            log.warning("scan of %s@%s failed (attempt %d of %d): %s", ref.name, row.manifest_digest,
                        failed_before + 1, MAX_ATTEMPTS, error)
            if failed_before + 1 < MAX_ATTEMPTS:
                raise
            self._finish(done, FAILED, f"ScanFailed: {error} (after {MAX_ATTEMPTS} attempts)"[:1000])
            return f"scan {key}: FAILED after {MAX_ATTEMPTS} attempts"

    def _scan(self, key: str, row: sa.Row, ref: RepoRef, done: _Done) -> str:
        try:
            inventory = Inventories(self.registry).image(ref, row.manifest_digest)
        except (ManifestUnknown, RepositoryNotFound):
            self._finish(done, FAILED, "The image was deleted before it was scanned.")
            return f"scan {key}: the image was deleted"
        if inventory.status != COMPLETE:
            status = UNSUPPORTED_IMAGE if inventory.status == UNSUPPORTED_IMAGE else FAILED
            self._finish(done, status, f"{DESCRIPTIONS[UNSUPPORTED_IMAGE]} ({inventory.reason})"
                         if status == UNSUPPORTED_IMAGE else f"ScanFailed: {inventory.reason}")
            return f"scan {key}: {status}"
        if inventory.os is None and not inventory.packages:
            self._finish(done, UNSUPPORTED_IMAGE, DESCRIPTIONS[UNSUPPORTED_IMAGE] +
                         " (no operating system or package found)")
            return f"scan {key}: no packages"
        matched = matcher.match(self.ctx.db, inventory)
        self._finish(done, COMPLETE, DESCRIPTIONS[COMPLETE], matched, inventory, json.loads(row.findings))
        return f"scan {key}: {len(matched)} finding(s) in {len(inventory.packages)} package(s)"

    def _finish(self, done: _Done, status: str, description: str, matched: list[matcher.Finding] | None = None,
                inventory: ImageInventory | None = None, previous: list[dict] | None = None) -> None:
        """Store a scan's result, its job's end and its event in one unit of work. An ENHANCED scan of a repository
        scanned continuously is ACTIVE once complete (as ECR shows it), else COMPLETE."""
        t = image_scans.c
        with self.ctx.transaction() as tx:
            source_updated = tx.conn.execute(sa.select(sa.func.max(advisories.c.imported_at))).scalar()
            repo_id = tx.conn.execute(sa.select(t.repository_id).where(t.id == done.scan_id)).scalar()
            enhanced = done.scan_type == ENHANCED
            rendered: list[dict] = []
            if matched is not None and inventory is not None and repo_id is not None:
                rendered = (self._enhanced(tx.conn, tx.now, repo_id, done, inventory, matched, previous or [])
                            if enhanced else [findings.basic(f) for f in matched])
                if enhanced and scan_rules.for_repository(tx.conn, repo_id).continuous:
                    status, description = ACTIVE, DESCRIPTIONS[ACTIVE]
            counts = findings.counts(rendered)
            # only the request this run started from: one made since (requested_at moved) keeps its job and runs
            updated = tx.conn.execute(sa.update(image_scans).where(
                t.id == done.scan_id, t.requested_at == done.requested_at).values(
                status=status, description=description[:4000], completed_at=tx.now,
                source_updated_at=source_updated or tx.now, counts=json.dumps(counts), findings=_dumps(rendered),
            )).rowcount
            if not updated:
                return
            # the job's row goes with its result: one-shot jobs must not pile up in `soko jobs` and /metrics (a
            # label pair per image); a new request inserts it again
            tx.conn.execute(sa.delete(jobs).where(jobs.c.kind == KIND, jobs.c.key == str(done.scan_id)))
            tags_now = self._tags(tx.conn, done.scan_id, done.digest)
            region = self.ctx.settings.region
            if not enhanced:
                tx.emit(image_scan(done.ref.account_id, region, done.ref.name, done.digest, tags_now,
                                   COMPLETE if status == COMPLETE else FAILED, counts))
            elif status in (COMPLETE, ACTIVE):  # Inspector announces an image's first scan only when it succeeds
                tx.emit(inspector_scan(done.ref.account_id, region, done.ref.name, done.digest, tags_now, counts))

    def _enhanced(self, conn: sa.Connection, now: float, repo_id: int, done: _Done, inventory: ImageInventory,
                  matched: list[matcher.Finding], previous: list[dict]) -> list[dict]:
        pushed_at = conn.execute(sa.select(manifests.c.pushed_at).where(
            manifests.c.repository_id == repo_id, manifests.c.digest == done.digest)).scalar()
        os_release = inventory.os
        image = findings.ImageContext(
            self.ctx.settings.region, done.ref.account_id, done.ref.name, done.digest,
            self._tags(conn, done.scan_id, done.digest), pushed_at, inventory.platform.rpartition("/")[2],
            os_release.id if os_release else "", os_release.version_id if os_release else "")
        first = {f["findingArn"]: f["firstObservedAt"] for f in previous if "findingArn" in f}
        return [findings.enhanced(f, image, now, first) for f in matched]

    # ---- registry scanning rules and continuous rescans --------------------------------------------------------
    def apply_rules(self, account_id: str) -> str | None:
        """The ``scan_rules`` job: after PutRegistryScanningConfiguration, the account's stored images follow the
        new rules — each image of a continuously scanned repository gets an ENHANCED scan unless it has one (then
        it is ACTIVE), and an ACTIVE scan whose repository is no longer scanned continuously is COMPLETE."""
        t, m = image_scans.c, manifests.c
        queued = changed = 0
        with self.ctx.db.read() as conn:
            scan_type, rules = scan_rules.configuration(conn, account_id)
            repositories = conn.execute(sa.select(repos.c.id, repos.c.name, repos.c.scan_on_push)
                                        .where(repos.c.account_id == account_id).order_by(repos.c.id)).all()
        for repo in repositories:
            if self.stopping():
                return None  # the runner releases the job uncounted: the next run applies the rules again
            continuous = scan_rules.applied(repo.name, bool(repo.scan_on_push), scan_type, rules).continuous
            with self.ctx.transaction() as tx:
                if not continuous:
                    changed += tx.conn.execute(sa.update(image_scans).where(
                        t.repository_id == repo.id, t.status == ACTIVE).values(
                        status=COMPLETE, description=DESCRIPTIONS[COMPLETE])).rowcount
                    continue
                changed += tx.conn.execute(sa.update(image_scans).where(
                    t.repository_id == repo.id, t.scan_type == ENHANCED, t.status == COMPLETE).values(
                    status=ACTIVE, description=DESCRIPTIONS[ACTIVE])).rowcount
                enhanced = sa.select(t.manifest_digest).where(t.repository_id == repo.id, t.scan_type == ENHANCED)
                images = tx.conn.execute(sa.select(m.digest).where(
                    m.repository_id == repo.id, m.media_type.not_in(INDEXES), m.subject_digest.is_(None),
                    m.digest.not_in(enhanced)).order_by(m.id)).scalars().all()
                for digest in images:
                    queued += queue.request(tx, repo.id, digest, ENHANCED)
        return f"scanning rules of {account_id}: {queued} scan(s) queued, {changed} status(es) changed" \
            if queued or changed else None

    def rescan_continuous(self) -> tuple[int, int]:
        """The ``scan_rescan`` job, queued by ``soko vulndb import``: every ENHANCED scan of a continuously scanned
        repository is matched again from the image's stored inventory — findings appear and disappear without
        reading a layer; one that keeps its ARN keeps its firstObservedAt. Scans whose inventory is not stored
        in this version's form are scanned again from their layers. Returns (scans re-matched, scans queued)."""
        t = image_scans.c
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(t.id, t.repository_id, t.manifest_digest, repos.c.account_id, repos.c.name,
                          repos.c.scan_on_push)
                .join(repos, repos.c.id == t.repository_id)
                .where(t.scan_type == ENHANCED, t.status.in_((COMPLETE, ACTIVE))).order_by(t.id)).all()
            configs = {account: scan_rules.configuration(conn, account) for account in {r.account_id for r in rows}}
        inventories = Inventories(self.registry)
        rows = [r for r in rows if scan_rules.applied(r.name, bool(r.scan_on_push), *configs[r.account_id]).continuous]
        updated = queued = 0
        for start in range(0, len(rows), RESCAN_BATCH):
            if self.stopping():
                return updated, queued  # released uncounted: the next run starts the rescan again
            batch = rows[start:start + RESCAN_BATCH]
            stored = {d: inventories.stored(d) for d in dict.fromkeys(r.manifest_digest for r in batch)}
            present = [inv for inv in stored.values() if inv is not None]
            matched = dict(zip((inv.digest for inv in present), matcher.match_many(self.ctx.db, present),
                               strict=True))
            with self.ctx.transaction() as tx:  # one per batch: no event, and a commit per scan cost more than it
                source_updated = tx.conn.execute(sa.select(sa.func.max(advisories.c.imported_at))).scalar()
                for row in batch:
                    inventory = stored[row.manifest_digest]
                    if inventory is None:
                        queued += queue.request(tx, row.repository_id, row.manifest_digest, ENHANCED)
                        continue
                    previous = tx.conn.execute(sa.select(t.findings).where(t.id == row.id)).scalar()
                    if previous is None:
                        continue  # the image was deleted meanwhile
                    done = _Done(row.id, RepoRef(row.account_id, row.name), row.manifest_digest, ENHANCED, None)
                    rendered = self._enhanced(tx.conn, tx.now, row.repository_id, done, inventory,
                                              matched[inventory.digest], json.loads(previous))
                    tx.conn.execute(sa.update(image_scans).where(
                        t.id == row.id, t.status.in_((COMPLETE, ACTIVE))).values(
                        counts=json.dumps(findings.counts(rendered)), findings=_dumps(rendered),
                        source_updated_at=source_updated or tx.now))
                    updated += 1
        return updated, queued

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
                for row in conn.execute(sa.select(t.manifest_digest, t.status, t.scan_type, t.description,
                                                  t.completed_at, t.source_updated_at, t.counts)
                                        .where(t.repository_id == repo_id, t.manifest_digest.in_(digests[i:i + 500]))):
                    out[row.manifest_digest] = Scan(row.manifest_digest, row.status, row.scan_type, row.description,
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
        return Scan(digest, row.status, row.scan_type, row.description, row.completed_at, row.source_updated_at,
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


def _dumps(rendered: list[dict]) -> str:
    return json.dumps(rendered, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _Done:
    scan_id: int
    ref: RepoRef
    digest: str
    scan_type: str
    requested_at: float | None  # the request the run started from (None: a rescan, which writes no status)


_SCAN_THREADS: ThreadPoolExecutor | None = None
_SCAN_THREADS_LOCK = threading.Lock()


def _lower_priority() -> None:
    """Scan threads run at a lower CPU priority (Linux schedules threads one by one), so on a busy node pushes and
    pulls are served first: a scan takes what they leave (``scan_concurrency`` bounds how many run). Only threads
    made for scans: an unprivileged process cannot raise a thread's priority back."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SCAN_NICENESS)
    except (OSError, AttributeError):  # not Linux, or not allowed: the scan still runs, at normal priority
        pass
