"""Deleted secrets are purged by the durable ``secrets_purge`` job once their recovery window has passed, and only
then (a restore within the window keeps the secret)."""

from __future__ import annotations

from concurrent.futures import wait

import pytest

from soko.app import secrets_purge_job
from soko.iam.service import Identity
from soko.jobs import JobRunner
from soko.secrets.store import SecretInvalidParameter, SecretNotFound, SecretStore, SecretValue
from tests.clock import Clock

ACCOUNT = "000000000000"
DAY = 86400.0


def test_deleted_secrets_are_purged_after_their_recovery_window(registry) -> None:
    clock = Clock(2_000_000_000.0)
    registry.ctx.clock = clock
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    kind = secrets_purge_job(store)
    runner = JobRunner(registry.ctx, [kind], owner="a", clock=clock)
    runner.schedule()  # (what start() does first)

    def run_job() -> None:
        clock.now += kind.interval + 1  # the job is hourly: the next run is due
        wait(runner.run_due())

    def value() -> SecretValue:
        return SecretValue('{"username":"u","accessToken":"t"}', None)

    short = store.create(ACCOUNT, "ecr-pullthroughcache/short", value(), None, None)
    kept = store.create(ACCOUNT, "ecr-pullthroughcache/kept", value(), None, None)
    restored = store.create(ACCOUNT, "ecr-pullthroughcache/restored", value(), None, None)
    store.delete(ACCOUNT, short.arn, recovery_days=7, force=False)
    store.delete(ACCOUNT, kept.arn, recovery_days=30, force=False)
    store.delete(ACCOUNT, restored.arn, recovery_days=7, force=False)
    store.restore(ACCOUNT, restored.arn)
    try:
        run_job()
        assert store.describe(ACCOUNT, short.arn).deleted_at is not None  # within its window: still there
        clock.now += 7 * DAY
        run_job()
        with pytest.raises(SecretNotFound):
            store.describe(ACCOUNT, short.arn)
        assert store.describe(ACCOUNT, kept.arn).deleted_at is not None
        assert store.describe(ACCOUNT, restored.arn).deleted_at is None
        clock.now += 23 * DAY
        run_job()
        with pytest.raises(SecretNotFound):
            store.describe(ACCOUNT, kept.arn)
        assert store.describe(ACCOUNT, restored.arn).name == "ecr-pullthroughcache/restored"
    finally:
        runner.stop()


@pytest.mark.parametrize("days", [0, 6, 31, -1])
def test_a_recovery_window_outside_7_to_30_days_is_refused(registry, days: int) -> None:
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    secret = store.create(ACCOUNT, "ecr-pullthroughcache/window", SecretValue("v", None), None, None)
    with pytest.raises(SecretInvalidParameter, match="between 7 and 30"):
        store.delete(ACCOUNT, secret.arn, recovery_days=days, force=False)
    assert store.describe(ACCOUNT, secret.arn).deleted_at is None
