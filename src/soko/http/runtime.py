"""How the server runs, for ``GET /metrics``: request durations, requests in flight, bytes in and out, background
runs (GC, lifecycle, metering samples, upload expiry) and database connection pools.

These are process-local counts (prometheus_client). With ``--workers N`` a scrape reaches one worker, so the
supervisor gives the workers a shared directory (``PROMETHEUS_MULTIPROC_DIR``: prometheus_client's multiprocess
mode, each process writing its values to its own memory-mapped file) and a scrape sums them over every worker;
a worker that dies keeps its counts, and its live gauges (in flight, pool use) are dropped.

``operation`` labels come from the front ends (``oci:get_manifest``, ``ecr:DescribeRepositories``,
``iam:CreateUser``, …): a bounded set, never a raw path or header.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from soko.http.messages import Request
    from soko.meta import Database

ENV = "PROMETHEUS_MULTIPROC_DIR"
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DURATION_BOUNDS = (*_DURATION_BUCKETS, math.inf)  # the histogram's buckets, with the +Inf it adds
_RUN_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


def multiprocess() -> bool:
    return bool(os.environ.get(ENV))


@contextlib.contextmanager
def shared_across_workers() -> Iterator[None]:
    """In the supervisor, before the workers fork: a fresh directory their metrics share (removed at the end)."""
    directory = tempfile.mkdtemp(prefix="soko-metrics-")
    os.environ[ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def worker_died(pid: int) -> None:
    """In the supervisor: a worker is gone; its live gauges no longer count (its counters and histograms do)."""
    if multiprocess():
        mark_process_dead(pid)


class RuntimeMetrics:
    """This process's metrics. Build one per process (after the fork)."""

    def __init__(self) -> None:
        if multiprocess():  # whatever was imported first: values go to this process's files
            values.ValueClass = values.MultiProcessValue()
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.in_flight = Gauge(
            "soko_http_requests_in_flight", "Requests being served", registry=reg, multiprocess_mode="livesum"
        )
        self.duration = Histogram(
            "soko_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by operation and status",
            ["operation", "status"],
            buckets=_DURATION_BUCKETS,
            registry=reg,
        )
        self.bytes_in = Counter(
            "soko_http_request_bytes", "Request body bytes received, by operation", ["operation"], registry=reg
        )
        self.bytes_out = Counter(
            "soko_http_response_bytes", "Response body bytes sent, by operation", ["operation"], registry=reg
        )
        self.runs = Counter(
            "soko_background_runs", "Background runs, by task and outcome (ok, failed)", ["task", "outcome"],
            registry=reg,
        )
        self.run_seconds = Histogram(
            "soko_background_run_duration_seconds", "How long background runs took, by task", ["task"],
            buckets=_RUN_BUCKETS, registry=reg,
        )
        self.last_success = Gauge(
            "soko_background_last_success_timestamp_seconds", "When a task last ran to completion (Unix time)",
            ["task"], registry=reg, multiprocess_mode="max",
        )
        self.pool = Gauge(
            "soko_db_pool_connections",
            "Database connections of this deployment's pools: checked_out (in use), idle, overflow, size",
            ["state"], registry=reg, multiprocess_mode="livesum",
        )
        self._children: dict[tuple[str, str], tuple] = {}
        # (operation, status) -> [count per duration bucket (the last: +Inf), duration sum, bytes in, bytes out]
        self._pending: dict[tuple[str, str], list] = {}
        self.in_flight_source: Callable[[], int] | None = None  # the server's count (RsgiApp.in_flight)

    # -- requests ------------------------------------------------------------------------------------------------
    def observe(self, request: Request, status: int, bytes_out: int, started: float, now: float) -> None:
        """Count one finished request. Counted here in plain integers and folded into the Prometheus values by
        ``fold`` (each second, at a scrape, at shutdown): prometheus_client's own observe costs several µs a request
        (a lock per value, and in multiprocess mode a write to its memory-mapped file), a quarter of a manifest GET.
        Runs on the event loop's thread only, as ``fold`` does."""
        key = (request.operation or _operation(request.path), str(status))
        cell = self._pending.get(key)
        if cell is None:
            cell = self._pending[key] = [0] * (len(_DURATION_BOUNDS) + 3)
        duration = now - started
        cell[bisect_left(_DURATION_BOUNDS, duration)] += 1  # the first bucket whose bound is >= duration
        cell[-3] += duration
        cell[-2] += request.bytes_in
        cell[-1] += bytes_out

    def fold(self) -> None:
        """Move the requests counted since the last fold into the Prometheus values (a scrape then sees them)."""
        pending, self._pending = self._pending, {}
        for key, cell in pending.items():
            children = self._children.get(key)
            if children is None:
                if len(self._children) > 10_000:  # (bounded labels make this unreachable; never grow without limit)
                    self._children.clear()
                children = (self.duration.labels(*key), self.bytes_in.labels(key[0]), self.bytes_out.labels(key[0]))
                self._children[key] = children
            histogram, received, sent = children
            # Histogram.observe one bucket count at a time: its per-bucket values (not cumulative) and sum, as
            # prometheus_client 0.26 (pinned) keeps them.
            for bucket, count in zip(histogram._buckets, cell, strict=False):
                if count:
                    bucket.inc(count)
            histogram._sum.inc(cell[-3])
            if cell[-2]:
                received.inc(cell[-2])
            if cell[-1]:
                sent.inc(cell[-1])

    # -- background tasks ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, task: str) -> Iterator[None]:
        """Time one background run of ``task``; a run that raises counts as failed (and re-raises)."""
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.runs.labels(task, "failed").inc()
            raise
        finally:
            self.run_seconds.labels(task).observe(time.monotonic() - started)
        self.runs.labels(task, "ok").inc()
        self.last_success.labels(task).set(time.time())

    def sample(self, db: Database) -> None:
        """Each second and at a scrape: the requests counted since the last time (``fold``), and the gauges read
        rather than counted: requests in flight, pool use."""
        self.fold()
        if self.in_flight_source is not None:
            self.in_flight.set(self.in_flight_source())
        pool = db.engine.pool
        for state, read in (("checked_out", "checkedout"), ("idle", "checkedin"), ("overflow", "overflow"),
                            ("size", "size")):
            method = getattr(pool, read, None)
            if method is not None:
                self.pool.labels(state).set(max(method(), 0))

    # -- scraping ------------------------------------------------------------------------------------------------
    def collector(self):
        """What a scrape adds: every worker's values in multiprocess mode, else this process's."""
        if multiprocess():
            return MultiProcessCollector(CollectorRegistry(auto_describe=False))
        return self.registry


def _operation(path: str) -> str:
    """Requests no front end named (probes, /metrics, presigned layers, unknown paths)."""
    if path in ("/healthz", "/readyz", "/metrics"):
        return path[1:]
    if path.startswith("/layers/"):
        return "layers"
    if path.startswith("/v2"):
        return "oci:other"
    return "other"
