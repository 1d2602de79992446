"""``GET /metrics``: the metering figures in Prometheus text exposition, read exactly from the database at scrape
time (plus this process's unflushed transfer counts) and cached for a few seconds so that scrapes stay cheap.

With several worker processes behind one port, each scrape adds one process's unflushed counts; the counters are
exact to within the ~10 s flush window of the other processes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from soko.http.context import split_address
from soko.http.messages import Request, Response
from soko.metering.pricing import gb_months

if TYPE_CHECKING:
    from soko.http.runtime import RuntimeMetrics
    from soko.kernel.context import DomainContext
    from soko.metering.service import Metering
    from soko.registry import Registry
    from soko.registry.uploads import Uploads

CACHE_SECONDS = 5.0


class MeteringCollector:
    def __init__(self, metering: Metering, uploads: Uploads, cache_seconds: float = CACHE_SECONDS) -> None:
        self.metering = metering
        self.uploads = uploads
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at = float("-inf")

    def collect(self):
        with self._lock:
            if time.monotonic() - self._cached_at >= self.cache_seconds:
                self._cached = self._read()
                self._cached_at = time.monotonic()
            return list(self._cached)

    def describe(self):
        return []  # families depend on the data: do not run a scrape at registration

    def _read(self) -> list[Metric]:
        metering = self.metering
        stored = metering.stored()
        repo_bytes = GaugeMetricFamily(
            "soko_repository_stored_bytes",
            "Bytes stored per repository: logical (every linked blob + manifests) or physical (its share of the "
            "account's deduplicated bytes)",
            labels=["account", "repository", "kind"],
        )
        for repo in stored.repositories:
            repo_bytes.add_metric([repo.account_id, repo.repository, "logical"], repo.logical_bytes)
            repo_bytes.add_metric([repo.account_id, repo.repository, "physical"], repo.physical_bytes)
        account_bytes = GaugeMetricFamily(
            "soko_account_stored_bytes",
            "Bytes stored per account: logical (sum over repositories) or physical (distinct blobs + manifests)",
            labels=["account", "kind"],
        )
        for account, logical in sorted(stored.account_logical.items()):
            account_bytes.add_metric([account, "logical"], logical)
            account_bytes.add_metric([account, "physical"], stored.account_physical.get(account, 0))
        registry_bytes = GaugeMetricFamily(
            "soko_registry_stored_bytes", "Bytes the registry stores: blob content and manifests", labels=["kind"]
        )
        registry_bytes.add_metric(["blobs"], stored.registry_blob_bytes)
        registry_bytes.add_metric(["manifests"], stored.registry_manifest_bytes)

        current = datetime.fromtimestamp(metering.ctx.clock(), UTC)
        accrued = metering.accrued(current.year, current.month)
        gbm = GaugeMetricFamily(
            "soko_storage_gb_months",
            "GB-months (GB = 2^30 bytes) of storage accrued so far this calendar month (UTC)",
            labels=["account", "repository", "kind"],
        )
        for (account, repository), (logical, physical) in sorted(accrued.items()):
            gbm.add_metric([account, repository, "logical"], gb_months(logical, current.year, current.month))
            gbm.add_metric([account, repository, "physical"], gb_months(physical, current.year, current.month))

        transfer: dict[tuple[str, str, str, str], int] = {}
        requests: dict[tuple[str, str, str], int] = {}
        rows = metering.transfer_totals()
        for account, repository, endpoint, network, operation, nbytes, count in rows:
            key = (account, repository, endpoint, network)
            transfer[key] = transfer.get(key, 0) + nbytes
            op_key = (account, repository, operation)
            requests[op_key] = requests.get(op_key, 0) + count
        transfer_family = CounterMetricFamily(
            "soko_transfer_bytes",
            "Bytes served (response bodies), by endpoint (public or VPC endpoint id) and network "
            "(internet, same-region, private)",
            labels=["account", "repository", "endpoint", "network"],
        )
        for transfer_labels, value in sorted(transfer.items()):
            transfer_family.add_metric(list(transfer_labels), value)
        request_family = CounterMetricFamily(
            "soko_requests", "Requests served, by operation", labels=["account", "repository", "operation"]
        )
        for labels, value in sorted(requests.items()):
            request_family.add_metric(list(labels), value)
        sessions = GaugeMetricFamily(
            "soko_upload_sessions",
            "Blob upload sessions: open (started, not yet completed or expired) and writing (a request is "
            "sending a chunk now)",
            labels=["state"],
        )
        open_, writing = self.uploads.session_counts()
        sessions.add_metric(["open"], open_)
        sessions.add_metric(["writing"], writing)
        return [repo_bytes, account_bytes, registry_bytes, gbm, transfer_family, request_family, sessions]


class JobsCollector:
    """The leased jobs' cluster-wide counters (the ``jobs`` table): runs, failures, last duration and lag."""

    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx

    def describe(self):
        return []

    def collect(self):
        from soko.jobs import job_table

        rows = job_table(self.ctx)
        now = time.time()  # jobs run on wall-clock time (soko.jobs.runner)
        families = {
            "runs": CounterMetricFamily("soko_job_runs", "Runs of each leased job", labels=["kind", "key"]),
            "failures": CounterMetricFamily(
                "soko_job_failures", "Failed runs of each leased job", labels=["kind", "key"]
            ),
            "last_duration": GaugeMetricFamily(
                "soko_job_last_duration_seconds", "How long the last run took", labels=["kind", "key"]
            ),
            "lag": GaugeMetricFamily(
                "soko_job_lag_seconds",
                "How late the job is: now past its next run while nobody holds it, else how late its last run started",
                labels=["kind", "key"],
            ),
        }
        for row in rows:
            labels = [row["kind"], row["key"]]
            families["runs"].add_metric(labels, row["runs"])
            families["failures"].add_metric(labels, row["failures"])
            families["last_duration"].add_metric(labels, row["last_duration"] or 0.0)
            held = row["lease_until"] is not None and row["lease_until"] > now
            overdue = 0.0 if held else max(now - row["next_run"], 0.0)
            families["lag"].add_metric(labels, overdue or row["last_lag"] or 0.0)
        return list(families.values())


class BatchCollector:
    """This process's in-memory batches (``soko.batcher``): records waiting, and records dropped at the bound."""

    def describe(self):
        return []

    def collect(self):
        from soko.batcher import BATCHERS

        pending = GaugeMetricFamily("soko_batch_pending", "Records waiting in memory to be written", labels=["batch"])
        dropped = CounterMetricFamily(
            "soko_batch_dropped", "Records dropped because the batch was full (database unreachable)", labels=["batch"]
        )
        for name, batcher in sorted(BATCHERS.items()):
            pending.add_metric([name], len(batcher))
            dropped.add_metric([name], batcher.dropped)
        return [pending, dropped]


def metrics_handler(registry: Registry, runtime: RuntimeMetrics) -> Callable[[Request], Awaitable[Response]]:
    """The handler for ``GET /metrics`` on the main port: the metering figures and the runtime metrics."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(MeteringCollector(registry.metering, registry.uploads))
    collectors.register(runtime.collector())
    collectors.register(BatchCollector())
    collectors.register(JobsCollector(registry.ctx))
    from soko.events.metrics import EventsCollector
    from soko.events.targets import Targets

    collectors.register(EventsCollector(Targets(registry.ctx)))
    allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in registry.settings.metrics_allow_cidrs]

    async def handle(request: Request) -> Response:
        # The figures name repositories: only scrapers from the allowed networks may read them.
        try:
            address = ipaddress.ip_address(split_address(request.client)[0]) if request.client else None
        except ValueError:
            address = None
        if address is None or not any(address in network for network in allowed):
            message = b"metrics are served only to the networks in metrics_allow_cidrs\n"
            return Response(403, None, message, "text/plain; charset=utf-8")
        runtime.sample(registry.ctx.db)
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, collectors)
        return Response(200, {"Content-Type": CONTENT_TYPE_LATEST}, body)

    return handle
