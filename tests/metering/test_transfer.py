"""Transfer and request metering: bytes actually sent, by endpoint and network, priced per AWS's tiers."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest
import sqlalchemy as sa

from soko.access import RequestContext
from soko.meta.schema import transfer_usage
from soko.metering import Metering
from soko.metering.pricing import GIB
from soko.metering.recorder import TransferRecorder
from soko.metering.report import build_report
from soko.registry.models import RepoRef
from tests.metering.conftest import VPCE
from tests.metering.helpers import config_blob, push_image
from tests.oci.helpers import sha256

ACCOUNT = "000000000000"


def totals(registry) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    """(repository, endpoint, network, operation) → (bytes, requests), from the database."""
    registry.metering.flush()
    t = transfer_usage.c
    with registry.ctx.db.read() as conn:
        rows = conn.execute(
            sa.select(
                t.repository_name, t.endpoint, t.network, t.operation, sa.func.sum(t.bytes_out), sa.func.sum(t.requests)
            ).group_by(t.repository_name, t.endpoint, t.network, t.operation)
        ).all()
    return {(r[0], r[1], r[2], r[3]): (int(r[4]), int(r[5])) for r in rows}


def test_blob_and_manifest_reads_count_the_bytes_sent(registry, client: httpx.Client) -> None:
    ref = RepoRef(ACCOUNT, "xfer/app")
    layer = os.urandom(10_000)
    _, manifest = push_image(registry, ref, "v1", config_blob(1), [layer])
    blob_url = f"/v2/xfer/app/blobs/{sha256(layer)}"
    sent = []

    full = client.get(blob_url)
    assert full.status_code == 200 and full.content == layer
    ranged = client.get(blob_url, headers={"Range": "bytes=100-1099"})
    assert ranged.status_code == 206 and ranged.content == layer[100:1100]
    suffix = client.get(blob_url, headers={"Range": "bytes=-300"})
    assert suffix.status_code == 206 and suffix.content == layer[-300:]
    open_ended = client.get(blob_url, headers={"Range": "bytes=9990-"})
    assert open_ended.content == layer[9990:]
    sent += [full, ranged, suffix, open_ended]
    assert client.head(blob_url).status_code == 200
    assert client.get(blob_url, headers={"Range": "bytes=20000-"}).status_code == 416  # nothing sent: not counted
    got = client.get("/v2/xfer/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert got.content == manifest
    assert client.head("/v2/xfer/app/manifests/v1", headers={"Accept": "*/*"}).status_code == 200
    put = client.put(
        "/v2/xfer/app/manifests/v2",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201

    assert totals(registry) == {
        ("xfer/app", "public", "internet", "blob_get"): (sum(len(r.content) for r in sent), 4),
        ("xfer/app", "public", "internet", "blob_head"): (0, 1),
        ("xfer/app", "public", "internet", "manifest_get"): (len(manifest), 1),
        ("xfer/app", "public", "internet", "manifest_head"): (0, 1),
        ("xfer/app", "public", "internet", "manifest_put"): (0, 1),
    }
    assert sum(len(r.content) for r in sent) == 10_000 + 1000 + 300 + 10
    report = build_report(registry.metering, *_month(registry), ACCOUNT)
    line = report["accounts"][0]["repositories"][0]
    assert line["transfer_bytes"] == {"internet": 11_310 + len(manifest), "same_region": 0, "private": 0}
    assert line["requests"] == {"blob_get": 4, "blob_head": 1, "manifest_get": 1, "manifest_head": 1, "manifest_put": 1}


def test_a_private_endpoint_listener_is_metered_apart(registry, two_listeners) -> None:
    ref = RepoRef(ACCOUNT, "xfer/private")
    layer = os.urandom(4096)
    push_image(registry, ref, "v1", config_blob(2), [layer])
    path = f"/v2/xfer/private/blobs/{sha256(layer)}"
    with httpx.Client(headers=two_listeners.headers, timeout=30) as http:
        assert http.get(two_listeners.private_url + path).content == layer
        assert len(http.get(two_listeners.public_url + path, headers={"Range": "bytes=0-99"}).content) == 100
    assert totals(registry) == {
        ("xfer/private", VPCE, "private", "blob_get"): (4096, 1),
        ("xfer/private", "public", "internet", "blob_get"): (100, 1),
    }


def _month(registry) -> tuple[int, int]:
    now = time.gmtime(registry.ctx.clock())
    return now.tm_year, now.tm_mon


def test_only_internet_traffic_is_priced_and_the_tiers_apply_per_account(registry) -> None:
    registry.settings.same_region_cidrs = ["10.0.0.0/8", "fd00::/8"]
    registry.metering = metering = Metering(registry.ctx)
    internet = RequestContext("r1", "203.0.113.7")
    same_region = RequestContext("r2", "10.1.2.3")
    same_region_v6 = RequestContext("r3", "fd00::1")
    private = RequestContext("r4", "203.0.113.7", endpoint="vpce-0abc")
    private_same_region = RequestContext("r5", "10.9.9.9", endpoint="vpce-0abc")
    metering.record_transfer(private, ACCOUNT, "big/a", 500 * GIB, "blob_get")
    metering.record_transfer(private_same_region, ACCOUNT, "big/a", 1 * GIB, "blob_get")
    metering.record_transfer(same_region, ACCOUNT, "big/a", 300 * GIB, "blob_get")
    metering.record_transfer(same_region_v6, ACCOUNT, "big/a", 10 * GIB, "blob_get")
    metering.record_transfer(internet, ACCOUNT, "big/a", 150 * GIB, "blob_get")
    metering.record_transfer(internet, ACCOUNT, "big/b", 50 * GIB, "blob_get")
    metering.record_transfer(internet, "111111111111", "big/c", 100 * GIB, "blob_get")  # within its own free tier

    report = build_report(metering, *_month(registry))
    accounts = {a["account_id"]: a for a in report["accounts"]}
    mine = accounts[ACCOUNT]
    assert mine["totals"]["transfer_bytes"] == {"internet": 200 * GIB, "same_region": 310 * GIB, "private": 501 * GIB}
    assert mine["totals"]["transfer_by_endpoint"] == {"public": 510 * GIB, "vpce-0abc": 501 * GIB}
    # 200 GB to the internet: 100 GB free, 100 GB at $0.09; private and same-region free.
    assert mine["totals"]["transfer_cost"] == pytest.approx(9.0, rel=1e-12)
    lines = {line["repository"]: line for line in mine["repositories"]}
    assert lines["big/a"]["transfer_cost"] == pytest.approx(9.0 * 150 / 200, rel=1e-12)
    assert lines["big/b"]["transfer_cost"] == pytest.approx(9.0 * 50 / 200, rel=1e-12)
    assert accounts["111111111111"]["totals"]["transfer_cost"] == 0.0
    assert mine["totals"]["requests"] == {"blob_get": 6}


def test_flushes_from_several_processes_add_up_and_a_failed_flush_loses_nothing(registry) -> None:
    recorders = [TransferRecorder(registry.ctx.db, registry.ctx.clock, []) for _ in range(4)]
    context = RequestContext("r", "198.51.100.1")

    def work(recorder: TransferRecorder) -> None:
        for i in range(200):
            recorder.record(context, ACCOUNT, "many/writers", 10, "blob_get")
            if i % 50 == 49:
                recorder.flush()

    threads = [threading.Thread(target=work, args=(r,)) for r in recorders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert totals(registry) == {("many/writers", "public", "internet", "blob_get"): (8000, 800)}

    recorder = recorders[0]
    recorder.record(context, ACCOUNT, "many/writers", 5, "blob_get")

    def broken(batch) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is down"))

    recorder._write = broken  # type: ignore[method-assign]
    with pytest.raises(sa.exc.OperationalError):
        recorder.flush()
    recorder.record(context, ACCOUNT, "many/writers", 7, "blob_get")
    assert list(recorder.pending().values()) == [(12, 2)]
    del recorder._write
    recorder.flush()
    assert totals(registry) == {("many/writers", "public", "internet", "blob_get"): (8012, 802)}


def test_recording_is_cheap(registry) -> None:
    context = RequestContext("r", "198.51.100.1")
    record = registry.metering.record_transfer
    started = time.perf_counter()
    for _ in range(20_000):
        record(context, ACCOUNT, "hot/path", 1, "blob_get")
    per_call = (time.perf_counter() - started) / 20_000
    assert per_call < 50e-6  # ~1 µs on a normal machine; the bound is loose for slow CI runners
    assert registry.metering.transfers.pending()  # in memory: nothing was written
