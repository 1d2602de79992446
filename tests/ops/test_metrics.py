"""/metrics tells how the server runs: request durations by operation and status, requests in flight, bytes in and
out, upload sessions, background runs with their last success, database pool use — summed over workers."""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from soko.http.runtime import RuntimeMetrics
from tests.e2e.servers import child_pids, start_soko
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
    """Both workers answer (each one's own metrics file shows requests), and a scrape, whichever worker it reaches,
    counts the requests of both."""
    server = start_soko(tmp_path / "data", workers=2)
    try:
        deadline = time.monotonic() + 15
        while len(workers := child_pids(server.pid)) != 2:
            assert time.monotonic() < deadline, f"two workers: {workers}"
            time.sleep(0.1)
        sent = 0
        per_worker = dict.fromkeys(workers, 0.0)
        while sent < 400 and not all(per_worker.values()):
            for _ in range(10):  # fresh connections: the kernel hands each to either worker
                response = httpx.get(server.url + "/nothing-here", headers={"Connection": "close"}, timeout=10)
                assert response.status_code == 404
            sent += 10
            # Each worker folds its request counts into its file every second (and the one scraped, at once).
            deadline = time.monotonic() + 10
            while sum((per_worker := _per_worker(workers)).values()) < sent and time.monotonic() < deadline:
                time.sleep(0.2)
            assert sum(per_worker.values()) == sent, per_worker
        assert all(per_worker.values()), f"one worker served all {sent} requests: {per_worker}"
        for _ in range(3):  # whichever worker a scrape reaches, it counts every worker's requests
            samples = _samples(server.url)
            assert _value(samples, "soko_http_request_duration_seconds_count", operation="other", status="404") == sent
    finally:
        server.stop()


def _per_worker(workers: set[int]) -> dict[int, float]:
    return {pid: _worker_count(pid, "soko_http_request_duration_seconds_count", "404") for pid in workers}


def _worker_count(pid: int, name: str, status: str) -> float:
    """``name``'s samples with that status in worker ``pid``'s own multiprocess files (found through the files it
    has mapped), summed with prometheus_client's own reader."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    directories = {os.path.dirname(p) for p in re.findall(rf"(/\S+/[a-z_]+_{pid}\.db)$", maps, re.MULTILINE)}
    if not directories:
        return 0.0  # nothing written yet
    with tempfile.TemporaryDirectory() as own:
        for path in glob.glob(os.path.join(directories.pop(), f"*_{pid}.db")):
            shutil.copy(path, own)
        return sum(
            sample.value
            for family in MultiProcessCollector(None, own).collect()
            for sample in family.samples
            if sample.name == name and sample.labels.get("status") == status
        )


def test_the_readme_names_every_background_task_label(registry):
    """Background runs are labelled by job kind; the README's list of task labels is what operators alert on, so it
    must name exactly the kinds there are (it said `gc` after GC became gc_review, gc_blobs and gc_sweep)."""
    from soko.jobs.kinds import registry_jobs

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = re.search(r"\(tasks: the job kinds (.*?)\)", readme, re.S)
    assert listed, "README.md no longer lists the background task labels"
    kinds = {kind.name for kind in registry_jobs(registry)}
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == kinds, f"README's task labels should be: {sorted(kinds)}"
