"""Tier arithmetic at the tier edges, and the GB-month formula."""

from __future__ import annotations

import pytest

from soko.metering.pricing import (
    GIB,
    INTERNET_TIERS,
    gb_months,
    hours_in_month,
    internet_transfer_cost,
    month_bounds,
    parse_month,
)

TB = 1024  # GB


@pytest.mark.parametrize(
    ("gb", "usd"),
    [
        (0, 0.0),
        (1, 0.0),
        (100, 0.0),  # the free allowance, exactly
        (101, 0.09),
        (10 * TB, (10 * TB - 100) * 0.09),  # the end of the first paid tier
        (10 * TB + 1, (10 * TB - 100) * 0.09 + 0.085),
        (50 * TB, (10 * TB - 100) * 0.09 + 40 * TB * 0.085),
        (50 * TB + 1, (10 * TB - 100) * 0.09 + 40 * TB * 0.085 + 0.07),
        (150 * TB, (10 * TB - 100) * 0.09 + 40 * TB * 0.085 + 100 * TB * 0.07),
        (150 * TB + 1, (10 * TB - 100) * 0.09 + 40 * TB * 0.085 + 100 * TB * 0.07 + 0.05),
        (200 * TB, (10 * TB - 100) * 0.09 + 40 * TB * 0.085 + 100 * TB * 0.07 + 50 * TB * 0.05),
    ],
)
def test_internet_transfer_tiers(gb: int, usd: float) -> None:
    assert internet_transfer_cost(gb * GIB) == pytest.approx(usd, rel=1e-12, abs=1e-12)


def test_one_byte_past_the_free_allowance_costs_one_byte_of_the_first_tier() -> None:
    assert internet_transfer_cost(100 * GIB + 1) == pytest.approx(0.09 / GIB, rel=1e-6)
    assert INTERNET_TIERS[0] == (100, 0.0) and INTERNET_TIERS[-1] == (None, 0.05)


def test_gb_months_follow_the_hours_of_the_month() -> None:
    assert hours_in_month(2026, 2) == 672 and hours_in_month(2028, 2) == 696 and hours_in_month(2026, 1) == 744
    # 1 GiB for the whole of February 2026 is one GB-month; 3 GiB for 10 days of January 2026 is 30/31.
    assert gb_months(GIB * 672 * 3600, 2026, 2) == 1.0
    assert gb_months(3 * GIB * 240 * 3600, 2026, 1) == pytest.approx(30 / 31, rel=1e-15)


def test_months() -> None:
    start, end = month_bounds(2026, 12)
    assert (end - start) == 31 * 86400 and start == 1796083200
    assert parse_month("2026-02", 0) == (2026, 2)
    assert parse_month(None, 1796083200) == (2026, 12)
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("2026-13", 0)
