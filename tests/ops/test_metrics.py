"""/metrics tells how the server runs: request durations by operation and status, requests in flight, bytes in and
out, upload sessions, background runs with their last success, database pool use — summed over workers."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from soko.http.runtime import RuntimeMetrics
from tests.e2e.servers import start_soko
from tests.oci.helpers import push_blob


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_upload_pool_and_background_metrics(server, client, aws):
    blob = b"m" * 10_000
    digest = push_blob(client, "metrics/app", blob)
    for _ in range(3):
        assert client.get(f"/v2/metrics/app/blobs/{digest}").content == blob
    assert client.get("/v2/metrics/app/manifests/missing").status_code == 404
    session = client.post("/v2/metrics/app/blobs/uploads/")
    assert session.status_code == 202
    aws("ecr").describe_repositories()

    samples = _samples(server.url)
    count = "soko_http_request_duration_seconds_count"
    assert _value(samples, count, operation="oci:get_blob", status="200") == 3
    assert _value(samples, count, operation="oci:get_manifest", status="404") == 1
    assert _value(samples, count, operation="ecr:DescribeRepositories", status="200") == 1
    assert _value(samples, "soko_http_request_duration_seconds_bucket", operation="oci:get_blob", status="200",
                  le="+Inf") == 3
    assert _value(samples, "soko_http_request_bytes_total", operation="oci:start_upload") >= len(blob)
    assert _value(samples, "soko_http_response_bytes_total", operation="oci:get_blob") == 3 * len(blob)
    assert _value(samples, "soko_http_requests_in_flight") >= 1  # this scrape
    assert _value(samples, "soko_upload_sessions", state="open") == 1
    assert ("soko_db_pool_connections", (("state", "checked_out"),)) in samples
    # The metering sampler runs as the server starts: one successful run, timestamped.
    assert _value(samples, "soko_background_runs_total", outcome="ok", task="metering") >= 1
    assert _value(samples, "soko_background_last_success_timestamp_seconds", task="metering") > 0


def test_a_failed_run_is_counted_and_keeps_the_last_success():
    runtime = RuntimeMetrics()
    with runtime.run("gc"):
        pass
    with pytest.raises(RuntimeError), runtime.run("gc"):
        raise RuntimeError("database down")
    get = runtime.registry.get_sample_value
    assert get("soko_background_runs_total", {"task": "gc", "outcome": "ok"}) == 1
    assert get("soko_background_runs_total", {"task": "gc", "outcome": "failed"}) == 1
    assert get("soko_background_run_duration_seconds_count", {"task": "gc"}) == 2
    assert get("soko_background_last_success_timestamp_seconds", {"task": "gc"}) > 0


def test_metrics_add_up_over_workers(tmp_path):
    server = start_soko(tmp_path / "data", workers=2)
    try:
        for _ in range(20):  # answered by either worker
            assert httpx.get(server.url + "/nothing-here", timeout=10).status_code == 404
        # Each worker folds its request counts into the shared values every second (and the one scraped, at once).
        time.sleep(1.5)
        for _ in range(3):  # whichever worker a scrape reaches, it counts every worker's requests
            samples = _samples(server.url)
            assert _value(samples, "soko_http_request_duration_seconds_count", operation="other",
                          status="404") == 20
    finally:
        server.stop()


def test_request_counts_reach_the_histogram_at_the_next_fold():
    from soko.http.messages import Request

    runtime = RuntimeMetrics()
    request = Request("GET", "/v2/a/manifests/t", "", {}, "127.0.0.1:1", "127.0.0.1:2", "http", None)
    request.operation, request.bytes_in = "oci:get_manifest", 7
    for seconds in (0.0005, 0.003, 400.0):
        runtime.observe(request, 200, 10, 100.0, 100.0 + seconds)
    get = runtime.registry.get_sample_value
    labels = {"operation": "oci:get_manifest", "status": "200"}
    assert get("soko_http_request_duration_seconds_count", labels) is None  # counted, not yet folded
    runtime.fold()
    assert get("soko_http_request_duration_seconds_count", labels) == 3
    assert get("soko_http_request_duration_seconds_bucket", {**labels, "le": "0.001"}) == 1
    assert get("soko_http_request_duration_seconds_bucket", {**labels, "le": "0.005"}) == 2
    assert get("soko_http_request_duration_seconds_bucket", {**labels, "le": "300.0"}) == 2
    assert get("soko_http_request_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 3
    assert abs(get("soko_http_request_duration_seconds_sum", labels) - 400.0035) < 1e-6
    assert get("soko_http_request_bytes_total", {"operation": "oci:get_manifest"}) == 21
    assert get("soko_http_response_bytes_total", {"operation": "oci:get_manifest"}) == 30
    runtime.fold()  # nothing new: nothing added twice
    assert get("soko_http_request_duration_seconds_count", labels) == 3
