"""The registry's periodic jobs: each runs once per interval across every process and node."""

from __future__ import annotations

from soko.jobs.runner import JobKind
from soko.registry import Registry, outbox


def registry_jobs(registry: Registry) -> list[JobKind]:
    from soko.registry.lifecycle_runner import LifecycleRunner

    settings = registry.settings

    def gc(_key: str) -> str:
        return registry.gc.run().summary()

    def lifecycle(_key: str) -> str | None:
        runs = LifecycleRunner(registry).run()
        expired = sum(len(r.expired) for r in runs)
        return f"lifecycle policies expired {expired} image(s) in {len(runs)} repositories" if expired else None

    def upload_expiry(_key: str) -> str | None:
        count = registry.uploads.expire()
        return f"expired {count} abandoned upload(s)" if count else None

    def metering(_key: str) -> None:
        registry.metering.sample()

    from soko.scan.scans import KIND as SCAN
    from soko.scan.scans import Scans

    scans = Scans(registry)

    def event_retention(_key: str) -> str | None:
        count = outbox.prune(registry.ctx, settings.event_retention)
        return f"pruned {count} event(s) older than the retention" if count else None

    return [
        # one-shot, keyed by image_scans row: queued by StartImageScan or a push (soko.jobs.runner.enqueue); the
        # interval only keeps a finished scan from running again, a new request makes it due at once
        JobKind(SCAN, scans.run, 10 * 365 * 86400.0, concurrency=1, lease=120.0, keys=()),
        JobKind("gc", gc, settings.gc_interval),
        JobKind("event_retention", event_retention, 3600 if settings.event_retention > 0 else 0),
        JobKind("lifecycle", lifecycle, settings.lifecycle_interval),
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
