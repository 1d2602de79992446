"""The cost report behind ``soko usage``: one month, per repository and per account, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from soko.metering.pricing import INTERNET_TIERS, describe_tiers, gb_months, internet_transfer_cost, month_bounds
from soko.metering.recorder import INTERNET, OPERATIONS, PRIVATE, SAME_REGION

if TYPE_CHECKING:
    from soko.metering.service import Metering

FORMATS = ("table", "json", "csv")
_NETWORK_KEYS = {INTERNET: "internet", SAME_REGION: "same_region", PRIVATE: "private"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(repository: str | None) -> dict[str, Any]:
    line: dict[str, Any] = {} if repository is None else {"repository": repository, "deleted": False}
    line.update(
        {
            "stored_bytes": {"logical": 0, "physical": 0},
            "byte_seconds": {"logical": 0, "physical": 0},
            "gb_months": {"logical": 0.0, "physical": 0.0},
            "storage_cost": 0.0,
            # the archive tier: stored bytes now, GB-months accrued, and the GB-months ECR's 90-day minimum storage
            # duration charges for images that left the archive sooner (deleted or restored) this month
            "archive": {
                "stored_bytes": {"logical": 0, "physical": 0},
                "byte_seconds": 0,
                "minimum_duration_byte_seconds": 0,
                "gb_months": 0.0,
                "cost": 0.0,
            },
            "transfer_bytes": {key: 0 for key in _NETWORK_KEYS.values()},
            "transfer_by_endpoint": {},
            "requests": {},
            "transfer_cost": 0.0,
            "total_cost": 0.0,
        }
    )
    return line


def build_report(
    metering: Metering, year: int, month: int, account_id: str | None = None, *, idle: bool = True
) -> dict[str, Any]:
    """The month's figures for one account (``account_id``) or every account that has any. ``idle=False`` leaves
    out the lines of repositories with nothing stored, accrued or served (the totals are the same): the console's
    page of an account with 10,000 repositories, most of them empty, builds 10,000 fewer lines."""
    metering.flush()  # this process's own counts, if it served requests
    settings = metering.ctx.settings
    price = float(settings.price_storage_gb_month)
    archive_price = float(settings.price_archive_gb_month)
    now = metering.ctx.clock()
    current = metering.stored(account_id)
    accrued = metering.accrued(year, month, account_id)
    archived = metering.accrued_archive(year, month, account_id)
    transfers = metering.transfers_in(year, month, account_id)

    accounts: dict[str, dict[str, dict[str, Any]]] = {}
    if account_id is not None:
        accounts[account_id] = {}

    def line(account: str, repository: str) -> dict[str, Any]:
        lines = accounts.setdefault(account, {})
        found = lines.get(repository)
        if found is None:
            found = lines[repository] = _line(repository)
        return found

    existing = set()
    for repo in current.repositories:
        existing.add((repo.account_id, repo.repository))
        if not idle and not (repo.logical_bytes or repo.physical_bytes or repo.archive_logical_bytes):
            continue
        entry = line(repo.account_id, repo.repository)
        entry["stored_bytes"] = {"logical": repo.logical_bytes, "physical": repo.physical_bytes}
        entry["archive"]["stored_bytes"] = {
            "logical": repo.archive_logical_bytes,
            "physical": repo.archive_physical_bytes,
        }
    for (account, repository), (logical, physical) in accrued.items():
        entry = line(account, repository)
        entry["byte_seconds"] = {"logical": logical, "physical": physical}
        entry["gb_months"] = {"logical": gb_months(logical, year, month), "physical": gb_months(physical, year, month)}
        entry["storage_cost"] = entry["gb_months"]["physical"] * price
    for (account, repository), (stored_seconds, minimum_seconds) in archived.items():
        archive = line(account, repository)["archive"]
        archive["byte_seconds"] = stored_seconds
        archive["minimum_duration_byte_seconds"] = minimum_seconds
        archive["gb_months"] = gb_months(stored_seconds + minimum_seconds, year, month)
        archive["cost"] = archive["gb_months"] * archive_price
    for account, repository, endpoint, network, operation, nbytes, requests in transfers:
        entry = line(account, repository)
        key = _NETWORK_KEYS.get(network, network)
        entry["transfer_bytes"][key] = entry["transfer_bytes"].get(key, 0) + nbytes
        entry["transfer_by_endpoint"][endpoint] = entry["transfer_by_endpoint"].get(endpoint, 0) + nbytes
        entry["requests"][operation] = entry["requests"].get(operation, 0) + requests

    start, end = month_bounds(year, month)
    report: dict[str, Any] = {
        "month": f"{year:04d}-{month:02d}",
        "period": {"start": _iso(start), "end": _iso(min(end, now)) if start <= now else _iso(start)},
        "generated_at": _iso(now),
        "prices": {
            "storage_usd_per_gb_month": price,
            "archive_usd_per_gb_month": archive_price,
            "archive_minimum_days": 90,
            "internet_transfer_tiers": [{"up_to_gb": upper, "usd_per_gb": usd} for upper, usd in INTERNET_TIERS],
            "same_region_transfer_usd_per_gb": 0.0,
            "private_endpoint_transfer_usd_per_gb": 0.0,
            "gb_bytes": 1 << 30,
        },
        "accounts": [],
    }
    for account in sorted(accounts):
        lines = [accounts[account][name] for name in sorted(accounts[account])]
        totals = _line(None)
        for entry in lines:
            entry["deleted"] = (account, entry["repository"]) not in existing
            for group in ("stored_bytes", "byte_seconds", "gb_months", "transfer_bytes"):
                for key, value in entry[group].items():
                    totals[group][key] = totals[group].get(key, 0) + value
            for group in ("transfer_by_endpoint", "requests"):
                for key, value in entry[group].items():
                    totals[group][key] = totals[group].get(key, 0) + value
            for key in ("byte_seconds", "minimum_duration_byte_seconds", "gb_months", "cost"):
                totals["archive"][key] += entry["archive"][key]
            for key in ("logical", "physical"):
                totals["archive"]["stored_bytes"][key] += entry["archive"]["stored_bytes"][key]
        # The account's physical bytes are its DISTINCT blobs (the repositories' shares add up to them).
        totals["stored_bytes"]["physical"] = current.account_physical.get(account, 0)
        totals["storage_cost"] = totals["gb_months"]["physical"] * price
        internet = totals["transfer_bytes"]["internet"]
        totals["transfer_cost"] = internet_transfer_cost(internet)
        for entry in lines:
            if internet:  # tiers apply per account: each repository carries its pro-rata share
                entry["transfer_cost"] = totals["transfer_cost"] * entry["transfer_bytes"]["internet"] / internet
            entry["total_cost"] = entry["storage_cost"] + entry["archive"]["cost"] + entry["transfer_cost"]
        totals["total_cost"] = totals["storage_cost"] + totals["archive"]["cost"] + totals["transfer_cost"]
        report["accounts"].append({"account_id": account, "repositories": lines, "totals": totals})
    return report


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=False)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "table":
        return render_table(report)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


CSV_COLUMNS = [
    "month",
    "account_id",
    "scope",
    "repository",
    "deleted",
    "stored_logical_bytes",
    "stored_physical_bytes",
    "gb_months_logical",
    "gb_months_physical",
    "storage_cost_usd",
    "archive_physical_bytes",
    "archive_gb_months",
    "archive_minimum_duration_gb_months",
    "archive_cost_usd",
    "internet_bytes",
    "same_region_bytes",
    "private_bytes",
    "transfer_cost_usd",
    "requests",
    *(f"requests_{op}" for op in OPERATIONS),
    "total_cost_usd",
]


def _flat(month: str, account: str, scope: str, entry: dict[str, Any]) -> dict[str, Any]:
    requests = entry["requests"]
    return {
        "month": month,
        "account_id": account,
        "scope": scope,
        "repository": entry.get("repository", ""),
        "deleted": str(entry.get("deleted", False)).lower() if scope == "repository" else "",
        "stored_logical_bytes": entry["stored_bytes"]["logical"],
        "stored_physical_bytes": entry["stored_bytes"]["physical"],
        "gb_months_logical": f"{entry['gb_months']['logical']:.9f}",
        "gb_months_physical": f"{entry['gb_months']['physical']:.9f}",
        "storage_cost_usd": f"{entry['storage_cost']:.6f}",
        "archive_physical_bytes": entry["archive"]["stored_bytes"]["physical"],
        "archive_gb_months": f"{entry['archive']['gb_months']:.9f}",
        "archive_minimum_duration_gb_months": f"{_minimum_gb_months(month, entry):.9f}",
        "archive_cost_usd": f"{entry['archive']['cost']:.6f}",
        "internet_bytes": entry["transfer_bytes"]["internet"],
        "same_region_bytes": entry["transfer_bytes"]["same_region"],
        "private_bytes": entry["transfer_bytes"]["private"],
        "transfer_cost_usd": f"{entry['transfer_cost']:.6f}",
        "requests": sum(requests.values()),
        **{f"requests_{op}": requests.get(op, 0) for op in OPERATIONS},
        "total_cost_usd": f"{entry['total_cost']:.6f}",
    }


def _minimum_gb_months(month: str, entry: dict[str, Any]) -> float:
    year, number = (int(part) for part in month.split("-"))
    return gb_months(entry["archive"]["minimum_duration_byte_seconds"], year, number)


def render_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for account in report["accounts"]:
        for entry in account["repositories"]:
            writer.writerow(_flat(report["month"], account["account_id"], "repository", entry))
        writer.writerow(_flat(report["month"], account["account_id"], "account", account["totals"]))
    return out.getvalue().rstrip("\n")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable


def _money(usd: float) -> str:
    return f"${usd:,.4f}"


_TABLE_COLUMNS = (
    ("REPOSITORY", "<"),
    ("STORED LOGICAL", ">"),
    ("STORED PHYSICAL", ">"),
    ("GB-MONTHS", ">"),
    ("STORAGE", ">"),
    ("ARCHIVED", ">"),
    ("ARCHIVE GB-MO", ">"),
    ("ARCHIVE", ">"),
    ("INTERNET OUT", ">"),
    ("SAME-REGION OUT", ">"),
    ("PRIVATE OUT", ">"),
    ("REQUESTS", ">"),
    ("TRANSFER", ">"),
    ("TOTAL", ">"),
)


def _row(name: str, entry: dict[str, Any]) -> list[str]:
    return [
        name,
        human_bytes(entry["stored_bytes"]["logical"]),
        human_bytes(entry["stored_bytes"]["physical"]),
        f"{entry['gb_months']['physical']:.6f}",
        _money(entry["storage_cost"]),
        human_bytes(entry["archive"]["stored_bytes"]["physical"]),
        f"{entry['archive']['gb_months']:.6f}",
        _money(entry["archive"]["cost"]),
        human_bytes(entry["transfer_bytes"]["internet"]),
        human_bytes(entry["transfer_bytes"]["same_region"]),
        human_bytes(entry["transfer_bytes"]["private"]),
        str(sum(entry["requests"].values())),
        _money(entry["transfer_cost"]),
        _money(entry["total_cost"]),
    ]


def render_table(report: dict[str, Any]) -> str:
    prices = report["prices"]
    out = [
        f"Soko usage for {report['month']} ({report['period']['start']} to {report['period']['end']})",
        f"Prices: storage ${prices['storage_usd_per_gb_month']}/GB-month of physical bytes, archive "
        f"${prices['archive_usd_per_gb_month']}/GB-month (at least {prices['archive_minimum_days']} days per "
        "archived image); internet transfer "
        f"{describe_tiers()} per account; private-endpoint and same-region transfer free (GB = 2^30 bytes).",
    ]
    if not report["accounts"]:
        out.append("")
        out.append("No usage recorded.")
    for account in report["accounts"]:
        rows = [[title for title, _ in _TABLE_COLUMNS]]
        for entry in account["repositories"]:
            rows.append(_row(entry["repository"] + (" (deleted)" if entry["deleted"] else ""), entry))
        totals = account["totals"]
        rows.append(_row("TOTAL", totals))
        widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_COLUMNS))]

        def fmt(row: list[str], widths: list[int] = widths) -> str:
            cells = [
                cell.ljust(width) if align == "<" else cell.rjust(width)
                for cell, width, (_, align) in zip(row, widths, _TABLE_COLUMNS, strict=True)
            ]
            return "  ".join(cells).rstrip()

        out += ["", f"Account {account['account_id']}", fmt(rows[0]), fmt(["-" * w for w in widths])]
        out += [fmt(row) for row in rows[1:-1]]
        out += [fmt(["-" * w for w in widths]), fmt(rows[-1])]
        if totals["transfer_by_endpoint"]:
            parts = [f"{ep} {human_bytes(n)}" for ep, n in sorted(totals["transfer_by_endpoint"].items())]
            out.append("Transfer by endpoint: " + ", ".join(parts))
        if totals["requests"]:
            ordered = [op for op in OPERATIONS if op in totals["requests"]]
            ordered += sorted(op for op in totals["requests"] if op not in OPERATIONS)
            out.append("Requests: " + ", ".join(f"{op} {totals['requests'][op]}" for op in ordered))
    return "\n".join(out)
