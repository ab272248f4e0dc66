"""The Prometheus export: a snapshot of totals, the histogram and the gauges, as text 0.0.4.

The exported names are the contract of `ops/` (the Grafana dashboard, the alert rules); a test
checks both against `exported_names()`. prometheus_client is imported only when rendering.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from core import keys

if TYPE_CHECKING:
    from core.metrics import PrometheusSnapshot

PREFIX = "agent_rebalance_"
# Standard buckets (seconds) derived from the fine log buckets: a drained job runs from
# milliseconds (a no-op) to the webhook timeout and beyond.
DURATION_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# exported counter name (without `_total`) -> totals field, help text
COUNTERS = {
    "jobs_submitted": (keys.SUBMITTED, "Rebalance jobs accepted and queued."),
    "jobs_succeeded": (keys.SUCCEEDED, "Job executions that succeeded."),
    "jobs_failed": (keys.FAILED, "Job executions that ended in an error (retried or dead)."),
    "jobs_retried": (keys.RETRIED, "Failed executions scheduled for another attempt."),
    "jobs_dead": (keys.DEAD, "Jobs moved to the dead-letter queue."),
    "jobs_cancelled": (keys.CANCELLED, "Jobs cancelled by their owner before they started."),
    "jobs_expired": (keys.EXPIRED, "Jobs that ran out of their validity before they started."),
    "rate_limit_blocked": (keys.RATE_LIMIT_BLOCKED, "Submits refused by the rate limiter."),
}
GAUGES = {
    "queue_depth": ("queue_depth", "Jobs waiting in the queue."),
    "jobs_in_flight": ("in_flight", "Jobs claimed by a drain and not yet acknowledged."),
    "jobs_retrying": ("retrying", "Jobs waiting for their retry time."),
    "dead_letter_depth": ("dead_letters", "Jobs in the dead-letter queue."),
    "oldest_queued_age_seconds": ("oldest_queued_age_s", "Age of the oldest queued job."),
}
HISTOGRAM = "job_duration_seconds"


def exported_names() -> set[str]:
    """Every sample name the Prometheus endpoint writes (the dashboard's and rules' contract)."""
    names = {f"{PREFIX}{n}_total" for n in (*COUNTERS, keys.RATE_LIMIT_HITS)}
    names |= {PREFIX + n for n in GAUGES}
    names |= {f"{PREFIX}{HISTOGRAM}_{s}" for s in ("bucket", "sum", "count")}
    return names


class _SnapshotCollector:
    """A prometheus_client collector over one snapshot: the registry asks, we answer."""

    def __init__(self, snapshot: PrometheusSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        totals, times = self.snapshot.totals, self.snapshot.times
        for name, (field_name, doc) in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, doc, value=totals[field_name])
        hits = totals[keys.SUBMITTED] + totals[keys.RATE_LIMIT_BLOCKED]
        yield CounterMetricFamily(
            PREFIX + keys.RATE_LIMIT_HITS,
            "Submits seen by the rate limiter (accepted or blocked).",
            value=hits,
        )
        for name, (attr, doc) in GAUGES.items():
            yield GaugeMetricFamily(PREFIX + name, doc, value=getattr(self.snapshot.gauges, attr))
        buckets = [(_le(b), float(n)) for b, n in times.cumulative(DURATION_BUCKETS_S)]
        buckets.append(("+Inf", float(times.count)))
        yield HistogramMetricFamily(
            PREFIX + HISTOGRAM,
            "Execution time of drained jobs.",
            buckets=buckets,
            sum_value=times.sum_us / 1e6,
        )


def _le(bound: float) -> str:
    return repr(float(bound))


def render_prometheus(snapshot: PrometheusSnapshot) -> bytes:
    """The snapshot in the Prometheus text format 0.0.4 (`CONTENT_TYPE`)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
