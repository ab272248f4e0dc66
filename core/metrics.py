"""Metrics: the original system's recording operations and the reads behind the JSON summary
and the Prometheus snapshot (rendered by `core.prometheus`; the histogram math is
`core.histogram`).

Keys it reads and writes (names built in `core.keys`; the submit and ack scripts write the
same keys through `_metrics.lua`, inside the round trips they already make):

- `metrics:agent:rebalance:counters:<YYYY-MM-DD>:<name>`: daily counters, 7 d;
- `metrics:agent:rebalance:totals`: hash of all-time counters (fixed fields) for Prometheus;
- `metrics:agent:rebalance:execution_times[:<YYYY-MM-DD>]`: all-time and daily (7 d)
  execution-time histograms;
- `metrics:agent:rebalance:failed:<jobId>`: failure record (JSON), 7 d.

Execution times are a log-bucket histogram (`core.histogram`, written by `_metrics.lua`): at
most ~1,300 fields per day whatever the volume, percentiles within 1%.

Reads cost one round trip each: the Prometheus snapshot is a single pipeline of read-only
commands (safe to resend after a timeout); the summary is the same pipeline, or, for a
user's request, one script that first counts the read against the user's read limit
(`core.rate_limit.limited_read`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core import keys, rate_limit
from core.errors import ValidationError
from core.histogram import Histogram
from core.jobs import failure_record, iso
from core.jobs import now_ms as clock_ms
from core.queue import depth_commands
from core.rate_limit import RateLimit, ReadLimit, limited_read
from core.redis import RedisClient, Script, get_client

MAX_DAYS = 7
# Counters that also keep an all-time total (the Prometheus counters); other names, such as
# the smoke check's scratch counter, stay daily only so the totals hash keeps fixed fields.
TRACKED = (
    keys.SUBMITTED,
    keys.SUCCEEDED,
    keys.FAILED,
    keys.RETRIED,
    keys.DEAD,
    keys.CANCELLED,
    keys.EXPIRED,
    keys.RATE_LIMIT_BLOCKED,
)

_COUNT = Script("metrics_count.lua", prelude=["_metrics.lua"])
_TIMINGS = Script("metrics_timings.lua", prelude=["_metrics.lua"])


# --- recording -------------------------------------------------------------------------


def increment_counter(
    name: str, by: int = 1, now_ms: int | None = None, *, client: RedisClient | None = None
) -> int:
    """Add `by` to today's (UTC) counter `name`; returns the day's new value. One round trip."""
    if isinstance(by, bool) or not isinstance(by, int) or by < 1:
        raise ValidationError("by must be a positive integer")
    date = keys.day(clock_ms() if now_ms is None else now_ms)
    key_list = [keys.counter_key(date, name)]
    if name in TRACKED:
        key_list.append(keys.TOTALS)
    result = _COUNT(client or get_client(), key_list, [name, by, keys.METRICS_TTL_S])
    return int(result)


def record_timings(
    durations_ms: Sequence[float],
    now_ms: int | None = None,
    *,
    client: RedisClient | None = None,
) -> int:
    """Add execution times (ms) to today's and the all-time histograms, in one round trip."""
    if not durations_ms:
        return 0
    date = keys.day(clock_ms() if now_ms is None else now_ms)
    args = [keys.METRICS_TTL_S, *(repr(float(ms)) for ms in durations_ms)]
    return int(
        _TIMINGS(client or get_client(), [keys.exec_times_key(date), keys.exec_times_key()], args)
    )


def record_job_timing(
    job_id: str,
    start_time_ms: int,
    now_ms: int | None = None,
    *,
    client: RedisClient | None = None,
) -> float:
    """Record that job `job_id` ran from `start_time_ms` until now; returns the duration (ms).

    The job id is not stored: a histogram keeps counts, not members, so it stays bounded.
    """
    end = clock_ms() if now_ms is None else now_ms
    duration = max(0.0, float(end - start_time_ms))
    record_timings([duration], end, client=client)
    return duration


def record_failed_job(
    job_id: str,
    error: BaseException | str,
    context: Mapping[str, Any] | None = None,
    payload: Any = None,
    *,
    now_ms: int | None = None,
    client: RedisClient | None = None,
) -> None:
    """Store the failure record of `job_id` for 7 days (the latest failure wins)."""
    value = failure_record(job_id, error, context, payload, now_ms)
    (client or get_client()).execute(
        ["SET", keys.failed_key(job_id), value, "EX", keys.METRICS_TTL_S]
    )


def get_failed_job(job_id: str, *, client: RedisClient | None = None) -> dict[str, Any] | None:
    """The failure record of `job_id`, or None once it expired (or never existed)."""
    raw = (client or get_client()).execute(["GET", keys.failed_key(job_id)])
    return None if raw is None else json.loads(raw)


def check_rate_limit(
    user_id: str,
    limit: int = 10,
    window_s: int = 60,
    *,
    now_ms: int | None = None,
    client: RedisClient | None = None,
) -> RateLimit:
    """The submit route's sliding-window limiter, as the original system's operation: records
    one request of `user_id` if the window has room, counts it as blocked otherwise."""
    return rate_limit.check_rate_limit(client or get_client(), user_id, limit, window_s, now_ms)


def _hash(raw: Any) -> dict[str, str]:
    """HGETALL's answer as a dict: REST returns a flat list, redis-py a dict."""
    if not raw:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    return {str(raw[i]): raw[i + 1] for i in range(0, len(raw) - 1, 2)}


# --- reading ---------------------------------------------------------------------------

_QUEUE = keys.REQUEST_QUEUE
# Read with every summary and snapshot: depth, in flight, waiting to retry, dead, oldest job.
_GAUGE_COMMANDS: list[list[str | int]] = [
    *depth_commands(_QUEUE),
    ["LINDEX", _QUEUE, -1],  # LPUSH in, RPOP out: the last element is the oldest
]


@dataclass(frozen=True)
class Gauges:
    queue_depth: int
    in_flight: int
    retrying: int
    dead_letters: int
    oldest_queued_age_s: float


def _gauges(results: Sequence[Any], now_ms: int) -> Gauges:
    depth, leased, delayed, dead, oldest = results
    return Gauges(
        int(depth or 0), int(leased or 0), int(delayed or 0), int(dead or 0), _age_s(oldest, now_ms)
    )


def _age_s(job_json: Any, now_ms: int) -> float:
    """Seconds since the oldest queued job was enqueued; 0 for an empty queue."""
    if not job_json:
        return 0.0
    try:
        job = json.loads(job_json)
        enqueued = int(job.get("enqueued_at") or job.get("created_at"))
    except (ValueError, TypeError, AttributeError):
        return 0.0  # not one of our jobs (the generic queue API takes any data): no age
    return max(0, now_ms - enqueued) / 1000


_SUMMARY_COUNTERS = TRACKED


def get_metrics_summary(
    days: int = MAX_DAYS,
    now_ms: int | None = None,
    *,
    client: RedisClient | None = None,
    limit: ReadLimit | None = None,
) -> dict[str, Any]:
    """Counters and execution times over the last `days` UTC days (today included), plus the
    queue's gauges, in one round trip. Times are in milliseconds. With `limit`, the read
    counts against that user's read limit (`RateLimitedError` past it)."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"days must be an integer from 1 to {MAX_DAYS}")
    now = clock_ms() if now_ms is None else now_ms
    dates = keys.days_back(now, days)
    counter_keys = [keys.counter_key(d, n) for d in dates for n in _SUMMARY_COUNTERS]
    commands: list[list[str | int]] = [["MGET", *counter_keys]]
    commands += [["HGETALL", keys.exec_times_key(d)] for d in dates]
    commands += _GAUGE_COMMANDS
    results = limited_read(client or get_client(), limit, commands, now)
    counts = _sum_counters(results[0], len(_SUMMARY_COUNTERS))
    times = Histogram.merge(_hash(raw) for raw in results[1 : 1 + days])
    return _summary(days, now, counts, times, _gauges(results[1 + days :], now))


def _sum_counters(values: Sequence[Any], width: int) -> dict[str, int]:
    totals = dict.fromkeys(_SUMMARY_COUNTERS, 0)
    for i, raw in enumerate(values):
        totals[_SUMMARY_COUNTERS[i % width]] += int(raw or 0)
    return totals


def _summary(
    days: int, now_ms: int, counts: Mapping[str, int], times: Histogram, gauges: Gauges
) -> dict[str, Any]:
    blocked = counts[keys.RATE_LIMIT_BLOCKED]
    return {
        "days": days,
        "generatedAt": iso(now_ms),
        "totalJobs": counts[keys.SUBMITTED],
        "failedJobs": counts[keys.FAILED],
        "avgExecutionTime": _ms(times.mean_ms()),
        "p95ExecutionTime": _ms(times.percentile_ms(95)),
        # Every submit that passes the limiter is a hit, accepted (a job) or blocked.
        "rateLimit": {"hits": counts[keys.SUBMITTED] + blocked, "blocked": blocked},
        "succeededJobs": counts[keys.SUCCEEDED],
        "retriedJobs": counts[keys.RETRIED],
        "deadJobs": counts[keys.DEAD],
        "cancelledJobs": counts[keys.CANCELLED],
        "expiredJobs": counts[keys.EXPIRED],
        "executions": times.count,
        "p50ExecutionTime": _ms(times.percentile_ms(50)),
        "p99ExecutionTime": _ms(times.percentile_ms(99)),
        "queueDepth": gauges.queue_depth,
        "inFlight": gauges.in_flight,
        "retryingJobs": gauges.retrying,
        "deadLetterDepth": gauges.dead_letters,
        "oldestQueuedAgeSeconds": round(gauges.oldest_queued_age_s, 3),
    }


def _ms(value: float) -> float:
    return round(value, 3)


@dataclass(frozen=True)
class PrometheusSnapshot:
    """What the Prometheus endpoint exports, read in one round trip."""

    totals: dict[str, int]
    times: Histogram
    gauges: Gauges


def get_prometheus_snapshot(
    now_ms: int | None = None, *, client: RedisClient | None = None
) -> PrometheusSnapshot:
    """All-time totals, the all-time histogram and the gauges: one pipeline."""
    now = clock_ms() if now_ms is None else now_ms
    commands: list[list[str | int]] = [["HGETALL", keys.TOTALS], ["HGETALL", keys.exec_times_key()]]
    results = (client or get_client()).pipeline(commands + _GAUGE_COMMANDS)
    raw_totals = _hash(results[0])
    totals = {name: int(raw_totals.get(name) or 0) for name in TRACKED}
    return PrometheusSnapshot(
        totals, Histogram.merge([_hash(results[1])]), _gauges(results[2:], now)
    )


def get_queue_gauges(client: RedisClient, now_ms: int | None = None) -> Gauges:
    """The rebalance queue's depth, in-flight, retrying and dead counts and its oldest queued
    job's age, in one round trip (5 billed commands)."""
    now = clock_ms() if now_ms is None else now_ms
    return _gauges(client.pipeline(_GAUGE_COMMANDS), now)
