"""The events outbox keeps event_retention of events: older rows are pruned, newer ones and everything when the
retention is 0 are kept (both databases)."""

from __future__ import annotations

import sqlalchemy as sa

from soko.jobs.kinds import registry_jobs
from soko.meta.schema import event_outbox
from soko.registry import outbox
from soko.registry.models import RepoRef
from tests.clock import Clock
from tests.domain import push_image

DAY = 24 * 3600.0


def _events(registry) -> int:
    with registry.ctx.db.read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(event_outbox)).scalar()


def test_old_events_are_pruned_and_recent_ones_kept(registry, monkeypatch) -> None:
    clock = Clock(1_800_000_000.0)
    registry.ctx.clock = clock
    ref = RepoRef(registry.settings.account_id, "events/app")
    push_image(registry, ref, "old", [b"layer one"])
    old = _events(registry)
    assert old >= 1
    clock.now += 8 * DAY
    push_image(registry, ref, "new", [b"layer two"])
    recent = _events(registry) - old
    assert outbox.prune(registry.ctx, 0) == 0  # 0: keep everything
    monkeypatch.setattr(outbox, "BATCH", 1)  # several batches
    assert outbox.prune(registry.ctx, 7 * DAY) == old
    assert _events(registry) == recent
    assert outbox.prune(registry.ctx, 7 * DAY) == 0


def test_the_retention_job_exists_only_when_retention_is_on(registry) -> None:
    kinds = {kind.name: kind for kind in registry_jobs(registry)}
    assert kinds["event_retention"].interval == 3600
    registry.settings.event_retention = 0
    assert {kind.name: kind for kind in registry_jobs(registry)}["event_retention"].interval == 0
