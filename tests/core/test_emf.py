"""core.emf: a drain summary as CloudWatch embedded-metric-format fields."""

from __future__ import annotations

from core.emf import NAMESPACE, drain_metrics

SUMMARY = {
    "claimed": 12,
    "succeeded": 7,
    "retried": 3,
    "dead": 2,
    "released": 0,
    "expired": 1,
    "cancelled": 4,
    "parked": 0,
    "stale": 0,
    "requeued": 0,
    "batches": 2,
    "polls": 5,
    "faults": 1,
    "roundTrips": 6,
    "durationMs": 5120,
    "stopReason": "idle",
}


def test_summary_becomes_metrics_declared_under_one_namespace_and_dimension() -> None:
    """Each metric is declared in `_aws` with its unit and has a top-level value."""
    doc = drain_metrics(SUMMARY, "agent-rebalance-prod-drain", clock=lambda: 1700000000.5)
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert doc["_aws"]["Timestamp"] == 1700000000500
    assert directive["Namespace"] == NAMESPACE == "AgentRebalance"
    assert directive["Dimensions"] == [["FunctionName"]]
    assert doc["FunctionName"] == "agent-rebalance-prod-drain"
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    values = {name: doc[name] for name in units}
    assert values == {
        "Claimed": 12,
        "Succeeded": 7,
        "Retried": 3,
        "Dead": 2,
        "Failed": 5,
        "Expired": 1,
        "Cancelled": 4,
        "Faults": 1,
        "RoundTrips": 6,
        "DrainDuration": 5120,
    }
    assert units["DrainDuration"] == "Milliseconds" and units["Dead"] == "Count"


def test_queue_depth_and_oldest_age_are_emitted_when_the_summary_has_them() -> None:
    """Gauges the summary may grow are picked up; a missing counter reads as 0."""
    doc = drain_metrics({"queueDepth": 40, "oldestAgeMs": 91_000}, "f", clock=lambda: 0)
    units = {m["Name"]: m["Unit"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert (doc["QueueDepth"], units["QueueDepth"]) == (40, "Count")
    assert (doc["OldestJobAge"], units["OldestJobAge"]) == (91_000, "Milliseconds")
    assert doc["Succeeded"] == doc["Dead"] == 0
    assert "QueueDepth" not in drain_metrics(SUMMARY, "f")
