"""``soko usage`` in its three formats, and ``GET /metrics`` — the same exact figures."""

from __future__ import annotations

import csv
import io
import json
import os

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from soko.access import RequestContext
from soko.cli import main
from soko.metering.pricing import GIB, month_bounds
from soko.registry.models import RepoRef
from tests.metering.helpers import config_blob, push_image
from tests.oci.helpers import sha256

ACCOUNT = "000000000000"
HOUR = 3600


@pytest.fixture
def usage_data(registry):
    """Two repositories sharing a layer, sampled for 24 hours of March 2026, with some transfer."""
    registry.settings.metering_interval = HOUR
    shared = os.urandom(3000)
    push_image(registry, RepoRef(ACCOUNT, "cli/a"), "v1", config_blob(1), [shared, os.urandom(500)])
    push_image(registry, RepoRef(ACCOUNT, "cli/b"), "v1", config_blob(2), [shared])
    start, _ = month_bounds(2026, 3)
    for hour in range(24):
        registry.metering.sample(start + hour * HOUR)
    registry.metering.record_transfer(RequestContext("r", "203.0.113.9"), ACCOUNT, "cli/a", 250 * GIB, "blob_get")
    registry.metering.record_transfer(
        RequestContext("r", "203.0.113.9", endpoint="vpce-0cli"), ACCOUNT, "cli/b", 7 * GIB, "blob_get"
    )
    registry.metering.flush()  # the CLI is another process: it sees what the server flushed
    # The transfer was recorded "today"; the CLI reports the month given, so use the current month for transfer.
    return registry.metering.stored()


def run(registry, capsys, *args: str) -> str:
    settings = registry.settings
    code = main(["usage", "--data-dir", settings.data_dir, "--database-url", settings.database_url, *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_usage_json_is_the_exact_report(registry, capsys, usage_data) -> None:
    report = json.loads(run(registry, capsys, "--month", "2026-03", "--format", "json"))
    assert report["month"] == "2026-03" and report["prices"]["storage_usd_per_gb_month"] == 0.10
    (account,) = report["accounts"]
    assert account["account_id"] == ACCOUNT
    lines = {line["repository"]: line for line in account["repositories"]}
    stored = {r.repository: r for r in usage_data.repositories}
    for name in ("cli/a", "cli/b"):
        assert lines[name]["stored_bytes"] == {
            "logical": stored[name].logical_bytes,
            "physical": stored[name].physical_bytes,
        }
        expected = stored[name].physical_bytes * 24 * HOUR / (GIB * 744 * HOUR)
        assert lines[name]["gb_months"]["physical"] == pytest.approx(expected, rel=1e-12)
    assert account["totals"]["stored_bytes"]["physical"] == usage_data.account_physical[ACCOUNT]
    assert account["totals"]["stored_bytes"]["logical"] == usage_data.account_logical[ACCOUNT]


def test_usage_reports_transfer_for_the_current_month_in_csv_and_table(registry, capsys, usage_data) -> None:
    rows = list(csv.DictReader(io.StringIO(run(registry, capsys, "--format", "csv"))))
    assert [(r["scope"], r["repository"]) for r in rows] == [
        ("repository", "cli/a"),
        ("repository", "cli/b"),
        ("account", ""),
    ]
    total = rows[-1]
    assert int(total["internet_bytes"]) == 250 * GIB and int(total["private_bytes"]) == 7 * GIB
    assert float(total["transfer_cost_usd"]) == pytest.approx(150 * 0.09, abs=1e-6)  # 100 GB free, private free
    assert (
        int(total["requests_blob_get"]) == 2
        and int(total["stored_physical_bytes"]) == usage_data.account_physical[ACCOUNT]
    )

    table = run(registry, capsys, "--account", ACCOUNT)
    assert f"Account {ACCOUNT}" in table and "cli/a" in table and "TOTAL" in table
    assert "$13.5000" in table and "250.00 GiB" in table and "7.00 GiB" in table and "vpce-0cli 7.00 GiB" in table


def test_usage_for_other_accounts(registry, capsys, usage_data) -> None:
    empty = json.loads(run(registry, capsys, "--account", "222222222222", "--format", "json"))
    assert [a["account_id"] for a in empty["accounts"]] == ["222222222222"]
    assert empty["accounts"][0]["repositories"] == [] and empty["accounts"][0]["totals"]["total_cost"] == 0
    everyone = json.loads(run(registry, capsys, "--all-accounts", "--format", "json"))
    assert [a["account_id"] for a in everyone["accounts"]] == [ACCOUNT]
    assert main(["usage", "--data-dir", registry.settings.data_dir, "--month", "March"]) == 2


def test_metrics_expose_the_figures(registry, client: httpx.Client) -> None:
    ref = RepoRef(ACCOUNT, "prom/app")
    layer = os.urandom(2048)
    push_image(registry, ref, "v1", config_blob(9), [layer])
    registry.metering.sample()
    assert client.get(f"/v2/prom/app/blobs/{sha256(layer)}", headers={"Range": "bytes=0-999"}).status_code == 206
    assert client.get(f"/v2/prom/app/blobs/{sha256(layer)}").status_code == 200
    # Not flushed yet: the scrape adds this process's pending counts.
    response = httpx.get(client.base_url.join("/metrics"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    stored = registry.metering.stored()
    (repo,) = stored.repositories
    labels = (("account", ACCOUNT), ("repository", "prom/app"))
    assert (
        samples[("soko_repository_stored_bytes", (*labels[:1], ("kind", "logical"), labels[1]))] == repo.logical_bytes
    )
    assert (
        samples[("soko_repository_stored_bytes", (*labels[:1], ("kind", "physical"), labels[1]))] == repo.physical_bytes
    )
    assert (
        samples[("soko_account_stored_bytes", (("account", ACCOUNT), ("kind", "physical")))]
        == stored.account_physical[ACCOUNT]
    )
    assert samples[("soko_registry_stored_bytes", (("kind", "blobs"),))] == stored.registry_blob_bytes
    transfer_key = (
        "soko_transfer_bytes_total",
        (("account", ACCOUNT), ("endpoint", "public"), ("network", "internet"), ("repository", "prom/app")),
    )
    assert samples[transfer_key] == 1000 + 2048
    assert (
        samples[("soko_requests_total", (("account", ACCOUNT), ("operation", "blob_get"), ("repository", "prom/app")))]
        == 2
    )
    assert samples[("soko_storage_gb_months", (*labels[:1], ("kind", "physical"), labels[1]))] > 0
