"""``/metrics`` figures of event delivery, cluster-wide (read from the targets' rows at scrape time)."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from soko.events.targets import Targets


class EventsCollector:
    def __init__(self, targets: Targets) -> None:
        self.targets = targets

    def describe(self):
        return []

    def collect(self):
        labels = ["account", "target"]
        delivered = CounterMetricFamily("soko_event_deliveries", "Events delivered to each target", labels=labels)
        failures = CounterMetricFamily(
            "soko_event_delivery_failures", "Failed delivery attempts to each target", labels=labels
        )
        dead = GaugeMetricFamily(
            "soko_event_dead_letters", "Events each target gave up on (dead letters)", labels=labels
        )
        backlog = GaugeMetricFamily(
            "soko_event_backlog",
            "Outbox events after each target's position (all accounts: an upper bound)",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "soko_event_delivery_lag_seconds",
            "How long the oldest event each target has yet to pass has waited (0 when it is caught up)",
            labels=labels,
        )
        last_lag = GaugeMetricFamily(
            "soko_event_last_delivery_lag_seconds", "Commit to delivery of each target's last event", labels=labels
        )
        retrying = GaugeMetricFamily(
            "soko_event_retrying", "1 while each target's head event is failing and backing off", labels=labels
        )
        now = self.targets.ctx.clock()
        for t in self.targets.status():
            key = [t.account_id, t.name]
            delivered.add_metric(key, t.delivered)
            failures.add_metric(key, t.failures)
            dead.add_metric(key, t.dead)
            backlog.add_metric(key, t.backlog)
            lag.add_metric(key, max(now - t.oldest_pending_at, 0.0) if t.oldest_pending_at is not None else 0.0)
            last_lag.add_metric(key, t.last_lag or 0.0)
            retrying.add_metric(key, 1 if t.attempts else 0)
        return [delivered, failures, dead, backlog, lag, last_lag, retrying]
