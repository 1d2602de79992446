"""Prices and the arithmetic of GB-months and tiered transfer: the one place the numbers live."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

GIB = 1 << 30  # AWS bills storage and transfer in GB of 2^30 bytes
TIB_IN_GIB = 1024

# AWS data transfer out to internet pricing (per account and month; us-east-1, as ECR bills it):
# up to 100 GB free, then $0.09/GB up to 10 TB, $0.085/GB for the next 40 TB, $0.07/GB for the next 100 TB and
# $0.05/GB beyond 150 TB. Rows: (cumulative upper bound in GB, or None for the last tier; USD per GB).
INTERNET_TIERS: tuple[tuple[float | None, float], ...] = (
    (100, 0.0),
    (10 * TIB_IN_GIB, 0.09),
    (50 * TIB_IN_GIB, 0.085),
    (150 * TIB_IN_GIB, 0.07),
    (None, 0.05),
)


def internet_transfer_cost(nbytes: int, tiers: tuple[tuple[float | None, float], ...] = INTERNET_TIERS) -> float:
    """USD for ``nbytes`` sent to the internet by one account in one month, tier by tier."""
    gb = nbytes / GIB
    cost, lower = 0.0, 0.0
    for upper, price in tiers:
        if upper is None or gb <= upper:
            return cost + max(gb - lower, 0.0) * price
        cost += (upper - lower) * price
        lower = upper
    return cost


def describe_tiers(tiers: tuple[tuple[float | None, float], ...] = INTERNET_TIERS) -> str:
    parts, lower = [], 0.0
    for upper, price in tiers:
        span = f"above {_gb(lower)}" if upper is None else f"{_gb(lower)}-{_gb(upper)}"
        parts.append(f"{span} {'free' if price == 0 else f'${price}/GB'}")
        lower = upper or lower
    return ", ".join(parts)


def _gb(gb: float) -> str:
    return f"{gb / TIB_IN_GIB:g} TB" if gb >= TIB_IN_GIB else f"{gb:g} GB"


# Storage: AWS meters TimedStorage-ByteHrs (bytes stored x hours stored, summed over the month) and bills
# GB-months = ByteHrs / (2^30 x hours in that month). Soko samples stored bytes once per slot, so
# ByteHrs = Σ bytes x slot seconds / 3600 over the month's slots.
def month_bounds(year: int, month: int) -> tuple[int, int]:
    """[start, end) of a UTC calendar month in epoch seconds."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


def hours_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1] * 24


def gb_months(byte_seconds: int, year: int, month: int) -> float:
    return byte_seconds / (GIB * hours_in_month(year, month) * 3600)


def parse_month(text: str | None, now: float) -> tuple[int, int]:
    """'YYYY-MM' → (year, month); None → the current UTC month."""
    if not text:
        current = datetime.fromtimestamp(now, UTC)
        return current.year, current.month
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise ValueError(f"invalid month {text!r}: use YYYY-MM, e.g. 2026-11") from None
    return parsed.year, parsed.month
