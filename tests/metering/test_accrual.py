"""GB-month accrual from samples, with a controlled clock (both databases)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from soko.meta.schema import usage_samples
from soko.metering.pricing import GIB, month_bounds
from soko.metering.report import build_report
from soko.registry.models import RepoRef
from tests.metering.helpers import config_blob, push_image

ACCOUNT = "000000000000"
HOUR = 3600
FEB_START, MAR_START = month_bounds(2026, 2)
FEB_HOURS = 28 * 24


def insert_samples(registry, rows: list[tuple[str, str, int, int, int, int]]) -> None:
    """(account, repository, slot start, slot seconds, logical, physical) rows, as another node would write them."""
    keys = ("account_id", "repository_name", "slot_start", "slot_seconds", "logical_bytes", "physical_bytes")
    with registry.ctx.db.write() as conn:
        conn.execute(
            registry.ctx.db.insert_ignore(usage_samples),
            [{**dict(zip(keys, row, strict=True)), "sampled_at": 0.0} for row in rows],
        )


def test_synthetic_samples_give_the_hand_computed_gb_months_and_cost(registry) -> None:
    # 1 GiB for the first half of February (336 hourly slots), then 3 GiB for 24 hours: 0.5 + 3 * 24 / 672 GB-months.
    rows = [(ACCOUNT, "hand/a", FEB_START + h * HOUR, HOUR, GIB, GIB) for h in range(336)]
    rows += [(ACCOUNT, "hand/a", FEB_START + h * HOUR, HOUR, 3 * GIB, 3 * GIB) for h in range(336, 360)]
    rows += [(ACCOUNT, "hand/a", MAR_START, HOUR, 100 * GIB, 100 * GIB)]  # March: not February's
    rows += [(ACCOUNT, "hand/a", FEB_START - HOUR, HOUR, 100 * GIB, 100 * GIB)]  # January: not February's
    insert_samples(registry, rows)
    insert_samples(registry, rows[:10])  # a second node writing the same slots changes nothing

    report = build_report(registry.metering, 2026, 2, ACCOUNT)
    (account,) = report["accounts"]
    (line,) = account["repositories"]
    expected = 0.5 + 3 * 24 / 672
    assert line["repository"] == "hand/a" and line["deleted"] is True  # never created here: samples survive
    assert line["gb_months"]["physical"] == pytest.approx(expected, rel=1e-12)
    assert line["byte_seconds"]["physical"] == (336 * GIB + 24 * 3 * GIB) * HOUR
    assert line["storage_cost"] == pytest.approx(expected * 0.10, rel=1e-12)
    assert account["totals"]["total_cost"] == pytest.approx(expected * 0.10, rel=1e-12)

    registry.settings.price_storage_gb_month = 0.25
    report = build_report(registry.metering, 2026, 2, ACCOUNT)
    assert report["accounts"][0]["totals"]["storage_cost"] == pytest.approx(expected * 0.25, rel=1e-12)

    # Without idle lines (the console's page): an empty repository has none; the lines and totals are the same.
    registry.repositories.create(RepoRef(ACCOUNT, "hand/empty"))
    full = build_report(registry.metering, 2026, 2, ACCOUNT)
    lean = build_report(registry.metering, 2026, 2, ACCOUNT, idle=False)
    assert [e["repository"] for e in full["accounts"][0]["repositories"]] == ["hand/a", "hand/empty"]
    assert lean["accounts"][0]["repositories"] == full["accounts"][0]["repositories"][:1]
    assert lean["accounts"][0]["totals"] == full["accounts"][0]["totals"]


def test_the_sampler_accrues_what_is_stored_and_deleted_repositories_keep_their_past(registry) -> None:
    registry.settings.metering_interval = HOUR
    a, b = RepoRef(ACCOUNT, "acc/a"), RepoRef(ACCOUNT, "acc/b")
    shared = os.urandom(4001)
    push_image(registry, a, "v1", config_blob(1), [shared, os.urandom(100)])
    digest_b, _ = push_image(registry, b, "v1", config_blob(2), [shared, os.urandom(900)])
    first = {r.repository: r for r in registry.metering.stored().repositories}

    for hour in range(10):
        assert registry.metering.sample(FEB_START + hour * HOUR + 17) == 2
    assert registry.metering.sample(FEB_START + 9 * HOUR + 1800) == 0  # that slot is sampled already

    registry.manifests.delete(b, digest_b)
    registry.gc.run(grace_period=0)
    assert {r.repository: r.logical_bytes for r in registry.metering.stored().repositories}["acc/b"] == 0
    registry.repositories.delete(b, force=True)
    second = {r.repository: r for r in registry.metering.stored().repositories}
    assert set(second) == {"acc/a"} and second["acc/a"].physical_bytes > first["acc/a"].physical_bytes
    for hour in range(10, 15):
        assert registry.metering.sample(FEB_START + hour * HOUR) == 1  # empty repositories write no row
    registry.metering.sample(MAR_START + 5)

    def gbm(nbytes: int, hours: int) -> float:
        return nbytes * hours * HOUR / (GIB * FEB_HOURS * HOUR)

    report = build_report(registry.metering, 2026, 2, ACCOUNT)
    lines = {line["repository"]: line for line in report["accounts"][0]["repositories"]}
    assert lines["acc/b"]["deleted"] is True and lines["acc/b"]["stored_bytes"] == {"logical": 0, "physical": 0}
    expected_a = gbm(first["acc/a"].physical_bytes, 10) + gbm(second["acc/a"].physical_bytes, 5)
    expected_b = gbm(first["acc/b"].physical_bytes, 10)
    assert lines["acc/a"]["gb_months"]["physical"] == pytest.approx(expected_a, rel=1e-12)
    assert lines["acc/b"]["gb_months"]["physical"] == pytest.approx(expected_b, rel=1e-12)
    assert lines["acc/a"]["gb_months"]["logical"] == pytest.approx(
        gbm(first["acc/a"].logical_bytes, 10) + gbm(second["acc/a"].logical_bytes, 5), rel=1e-12
    )
    totals = report["accounts"][0]["totals"]
    assert totals["gb_months"]["physical"] == pytest.approx(expected_a + expected_b, rel=1e-12)
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_samples)).scalar() == 10 * 2 + 5 + 1
