"""CloudWatch metrics of a drain, in embedded metric format (EMF).

A log line that holds an `_aws` object is turned into metrics by CloudWatch Logs itself: no
API call, no permission, no extra latency. `drain_metrics(summary)` builds that line from the
drain's summary (`DrainSummary.as_dict()`); the drain handler logs it once per invocation, and
the alarms of serverless.yml watch the namespace below. Prometheus and the JSON summary are
untouched.

Metrics (namespace `AgentRebalance`, dimension `FunctionName`): Claimed, Succeeded, Failed
(retried + dead), Retried, Dead, Expired, Cancelled, Faults, RoundTrips, DrainDuration; and
QueueDepth and OldestJobAge whenever the summary carries `queueDepth` / `oldestAgeMs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

NAMESPACE = "AgentRebalance"
DIMENSION = "FunctionName"

# metric name -> (summary field, unit)
_COUNTS = {
    "Claimed": "claimed",
    "Succeeded": "succeeded",
    "Retried": "retried",
    "Dead": "dead",
    "Expired": "expired",
    "Cancelled": "cancelled",
    "Faults": "faults",
    "RoundTrips": "roundTrips",
}
# Gauges the summary may carry (read only when present, so an older summary still works).
_OPTIONAL = {"QueueDepth": ("queueDepth", "Count"), "OldestJobAge": ("oldestAgeMs", "Milliseconds")}


def drain_metrics(
    summary: Mapping[str, Any], function_name: str, *, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """The EMF document (a log line's fields) for one drain's `summary`."""
    values: dict[str, float] = {name: _number(summary, key) for name, key in _COUNTS.items()}
    values["Failed"] = values["Retried"] + values["Dead"]
    units = dict.fromkeys(values, "Count")
    values["DrainDuration"] = _number(summary, "durationMs")
    units["DrainDuration"] = "Milliseconds"
    for name, (key, unit) in _OPTIONAL.items():
        if isinstance(summary.get(key), int | float):
            values[name], units[name] = summary[key], unit
    return {
        "_aws": {
            "Timestamp": int(clock() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": [{"Name": name, "Unit": units[name]} for name in values],
                }
            ],
        },
        DIMENSION: function_name,
        **values,
    }


def _number(summary: Mapping[str, Any], key: str) -> float:
    value = summary.get(key, 0)
    return value if isinstance(value, int | float) else 0
