"""The registry's periodic jobs: each runs once per interval across every process and node."""

from __future__ import annotations

from soko.jobs.runner import JobKind, stopping
from soko.registry import Registry, outbox
from soko.registry.lifecycle_store import PREVIEW_JOB
from soko.registry.storage_class import KIND as STORAGE_CLASS


def registry_jobs(registry: Registry) -> list[JobKind]:
    from soko.registry.lifecycle_runner import LifecycleRunner

    settings = registry.settings

    # GC in three kinds, so a long storage sweep never holds up link reviews or blob deletion (``soko gc`` runs
    # all three in order). Each stops at a batch boundary on shutdown or when its lease is lost.
    def gc_review(_key: str) -> str | None:
        report = registry.gc.review(stopping=stopping)
        return f"gc: deleted {report.links_deleted} unreferenced link(s)" if report.links_deleted else None

    def gc_blobs(_key: str) -> str | None:
        report = registry.gc.delete_blobs(stopping=stopping)
        if not (report.blobs_deleted or report.tombstones_executed or report.trash_restored):
            return None
        return (
            f"gc: deleted {report.blobs_deleted} blob(s) ({report.bytes_reclaimed} bytes); "
            f"{report.tombstones_executed} storage deletion(s) carried out, {report.tombstones_voided} voided"
        )

    def gc_sweep(_key: str) -> str | None:
        report = registry.gc.sweep_storage(stopping=stopping)
        return f"gc: swept {report.stray_files_deleted} stray file(s)" if report.stray_files_deleted else None

    def lifecycle(_key: str) -> str | None:
        runs = LifecycleRunner(registry).run()
        expired = sum(len(r.expired) for r in runs)
        archived = sum(len(r.archived) for r in runs)
        if not (expired or archived):
            return None
        return f"lifecycle policies expired {expired} and archived {archived} image(s) in {len(runs)} repositories"

    def upload_expiry(_key: str) -> str | None:
        count = registry.uploads.expire()
        return f"expired {count} abandoned upload(s)" if count else None

    def metering(_key: str) -> None:
        registry.metering.sample()

    from soko.scan.scans import KIND as SCAN
    from soko.scan.scans import RESCAN_KIND, RULES_KIND, Scans

    scans = Scans(registry, stopping=stopping)

    def rescan(_key: str) -> str | None:
        updated, queued = scans.rescan_continuous()
        return f"continuous scans: {updated} re-matched, {queued} queued" if updated or queued else None

    from soko.replication import KIND as REPLICATION
    from soko.replication import Replicator
    from soko.replication.backfills import KIND as BACKFILL
    from soko.replication.backfills import Backfills
    from soko.replication.service import RETRY_CAP

    replicator = Replicator(registry, stopping=stopping)

    def event_retention(_key: str) -> str | None:
        count = outbox.prune(registry.ctx, settings.event_retention)
        return f"pruned {count} event(s) older than the retention" if count else None

    return [
        # one-shot, keyed by image_scans row: queued by StartImageScan or a push (soko.kernel.job_queue.enqueue); the
        # interval only keeps a finished scan from running again, a new request makes it due at once
        # at most scan_concurrency per process, each on a thread of lower CPU priority: pulls stay fast while scanning
        JobKind(SCAN, scans.run, 10 * 365 * 86400.0 if settings.scan_concurrency else 0,
                concurrency=max(settings.scan_concurrency, 1), lease=120.0, keys=()),
        # one-shot, keyed by account: PutRegistryScanningConfiguration applies the rules to the stored images
        JobKind(RULES_KIND, scans.apply_rules, 10 * 365 * 86400.0, lease=120.0, keys=()),
        # one-shot, key "advisories": `soko vulndb import` re-matches continuously scanned images
        JobKind(RESCAN_KIND, rescan, 10 * 365 * 86400.0, lease=120.0, keys=()),
        JobKind("gc_review", gc_review, settings.gc_interval),
        JobKind("gc_blobs", gc_blobs, settings.gc_interval),
        # rare: it lists all of storage (crash leftovers only; the other kinds leave no strays)
        JobKind("gc_sweep", gc_sweep, max(settings.gc_interval, 86400.0) if settings.gc_interval > 0 else 0),
        JobKind("event_retention", event_retention, 3600 if settings.event_retention > 0 else 0),
        JobKind("lifecycle", lifecycle, settings.lifecycle_interval),
        # one-shot, keyed by manifest id: queued by UpdateImageStorageClass and lifecycle transitions; moves the image's
        # content between tiers (a restore ends ACTIVE) and deletes its own row when done
        JobKind(STORAGE_CLASS, registry.storage_classes.run_job, 10 * 365 * 86400.0, concurrency=2, keys=()),
        # one-shot, keyed by repository id: queued by StartLifecyclePolicyPreview, like scans
        JobKind(PREVIEW_JOB, registry.lifecycle.run_preview_job, 10 * 365 * 86400.0, concurrency=2, keys=()),
        # the outbox reader turns push events into replication requests; each request is a one-shot job keyed by its
        # replication_status row (the interval caps the retry backoff; a finished one deletes its job)
        JobKind("replication_outbox", replicator.read_outbox, 1.0, lease=120.0),
        # (its copies to other regions log in there: the runner's stop closes those clients)
        JobKind(REPLICATION, replicator.run, RETRY_CAP, concurrency=4, lease=120.0, keys=(), close=replicator.close),
        # one-shot, keyed by backfill id: StartReplicationBackfill lists and requests what to replicate
        JobKind(BACKFILL, Backfills(replicator).run, RETRY_CAP, lease=120.0, keys=()),
        JobKind("upload_expiry", upload_expiry, min(settings.upload_expiry / 4, 600) or 1),
        # Samples start at once: GB-month accrual needs one before the first interval ends.
        JobKind(
            "metering",
            metering,
            registry.metering.interval if settings.metering_interval > 0 else 0,
            run_at_start=True,
            aligned=True,  # one GB-month sample per slot (now // interval): drift would skip slots
        ),
    ]
