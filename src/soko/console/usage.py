"""The usage page: what ``soko usage`` prints for the caller's account — stored bytes, GB-months, transfer and
requests per repository for a month (``soko.metering.report.build_report``, the same figures) — as charts and a
table, with the account's totals for the months before it.

Authorized as ``ce:GetCostAndUsage`` on ``*``: a cost and usage report is what AWS's Cost Explorer answers under that
action (which takes no resource), and Soko's API has no operation of its own for it.
"""

from __future__ import annotations

from soko.console.charts import Series, bar_chart
from soko.console.pages import BadInput, Viewer, size
from soko.metering.pricing import gb_months, parse_month
from soko.metering.report import build_report, render_csv

ACTION = "ce:GetCostAndUsage"
TOP_REPOSITORIES = 20  # in the charts; the table lists every repository
HISTORY_MONTHS = 6
TABLE_ROWS = 500


def _month_before(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _gb_months(value: float) -> str:
    # Three significant digits: a small registry's month is a few millionths of a GB-month, not "0.000".
    return f"{value:.3g} GB-mo"


def _money(usd: float) -> str:
    return f"${usd:,.4f}"


def _history(viewer: Viewer, year: int, month: int) -> list[dict]:
    """The account's stored GB-months and transfer out for this month and the ones before, oldest first."""
    metering = viewer.registry.metering
    months = []
    for _ in range(HISTORY_MONTHS):
        months.append((year, month))
        year, month = _month_before(year, month)
    out = []
    for y, m in reversed(months):
        accrued = metering.accrued(y, m, viewer.account)
        physical = sum(p for _, p in accrued.values())
        transfer = sum(row[5] for row in metering.transfers_in(y, m, viewer.account))
        out.append({"month": f"{y:04d}-{m:02d}", "gb_months": gb_months(physical, y, m), "transfer": transfer})
    return out


def _month(viewer: Viewer, query: dict[str, str]) -> tuple[int, int]:
    try:
        year, month = parse_month(query.get("month") or None, viewer.registry.ctx.clock())
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if not 2000 <= year <= 9999:
        raise BadInput("the month is out of range")
    return year, month


def usage_csv(viewer: Viewer, query: dict[str, str]) -> tuple[str, str] | None:
    """``soko usage --format csv`` for the caller's account: (file name, text); None when not allowed."""
    if viewer.allowed_on(ACTION, "*") is not None:
        return None
    year, month = _month(viewer, query)
    report = build_report(viewer.registry.metering, year, month, viewer.account)
    return f"usage-{viewer.account}-{report['month']}.csv", render_csv(report) + "\n"


def usage_page(viewer: Viewer, query: dict[str, str]) -> dict:
    out: dict = {"denied": viewer.allowed_on(ACTION, "*"), "action": ACTION}
    if out["denied"] is not None:
        return out
    year, month = _month(viewer, query)
    report = build_report(viewer.registry.metering, year, month, viewer.account, idle=False)
    [account] = report["accounts"]
    lines = account["repositories"]
    # The table: repositories with anything stored or served (an account of 10,000 idle repositories is not a page
    # of 10,000 rows), the costliest first, at most TABLE_ROWS; the CSV has every repository.
    used = [e for e in lines if e["stored_bytes"]["logical"] or e["gb_months"]["physical"] or e["requests"]]
    used.sort(key=lambda e: (-e["total_cost"], -e["stored_bytes"]["physical"], e["repository"]))
    rows = [
        {
            "repository": line["repository"],
            "deleted": line["deleted"],
            "logical": size(line["stored_bytes"]["logical"]),
            "physical": size(line["stored_bytes"]["physical"]),
            "gb_months": f"{line['gb_months']['physical']:.6f}",
            "storage_cost": _money(line["storage_cost"]),
            "internet": size(line["transfer_bytes"]["internet"]),
            "same_region": size(line["transfer_bytes"]["same_region"]),
            "private": size(line["transfer_bytes"]["private"]),
            "requests": sum(line["requests"].values()),
            "total_cost": _money(line["total_cost"]),
        }
        for line in used[:TABLE_ROWS]
    ]
    totals = account["totals"]
    # The charts show the largest repositories that have any (the table lists every one).
    stored = [e for e in lines if e["gb_months"]["physical"] > 0]
    moved = [e for e in lines if sum(e["transfer_bytes"].values()) > 0]
    by_storage = sorted(stored, key=lambda e: -e["gb_months"]["physical"])[:TOP_REPOSITORIES]
    by_transfer = sorted(moved, key=lambda e: -sum(e["transfer_bytes"].values()))[:TOP_REPOSITORIES]
    history = _history(viewer, year, month)
    out.update(
        month=report["month"],
        period=report["period"],
        rows=rows,
        hidden=len(used) - len(rows),
        totals={
            "physical": size(totals["stored_bytes"]["physical"]),
            "logical": size(totals["stored_bytes"]["logical"]),
            "gb_months": f"{totals['gb_months']['physical']:.6f}",
            "storage_cost": _money(totals["storage_cost"]),
            "transfer_cost": _money(totals["transfer_cost"]),
            "total_cost": _money(totals["total_cost"]),
            "transfer": size(sum(totals["transfer_bytes"].values())),
            "requests": sum(totals["requests"].values()),
        },
        history=[
            {**h, "gb_months_text": _gb_months(h["gb_months"]), "transfer_text": size(h["transfer"])} for h in history
        ],
        storage_chart=bar_chart(
            "chart-storage",
            f"Stored GB-months per repository, {report['month']}",
            [e["repository"] for e in by_storage],
            [Series("GB-months", [e["gb_months"]["physical"] for e in by_storage])],
            _gb_months,
        ),
        transfer_chart=bar_chart(
            "chart-transfer",
            f"Transfer out per repository by network, {report['month']}",
            [e["repository"] for e in by_transfer],
            [
                Series(name, [e["transfer_bytes"][key] for e in by_transfer])
                for key, name in (("internet", "internet"), ("same_region", "same region"), ("private", "private"))
            ],
            lambda v: size(int(v)),
        ),
        history_storage_chart=bar_chart(
            "chart-months-storage",
            f"Stored GB-months of the account, the {HISTORY_MONTHS} months to {report['month']}",
            [h["month"] for h in history],
            [Series("GB-months", [h["gb_months"] for h in history])],
            _gb_months,
        ),
        history_transfer_chart=bar_chart(
            "chart-months-transfer",
            f"Transfer out of the account, the {HISTORY_MONTHS} months to {report['month']}",
            [h["month"] for h in history],
            [Series("transfer out", [float(h["transfer"]) for h in history])],
            lambda v: size(int(v)),
        ),
        previous="{:04d}-{:02d}".format(*_month_before(year, month)),
        following="{:04d}-{:02d}".format(*((year + 1, 1) if month == 12 else (year, month + 1))),
    )
    return out
