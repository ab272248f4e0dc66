"""core.metrics against the real Lua on Valkey, through the Upstash-compatible gateway."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import valkey

from core import keys, metrics, prometheus
from core.errors import ValidationError
from core.histogram import Histogram
from core.jobs import failure_record
from core.redis import RestClient
from tests.bodies import rebalance

DAY_MS = 86_400_000


def at(year: int, month: int, day: int, hour: int = 12, minute: int = 0, ms: int = 0) -> int:
    moment = datetime(year, month, day, hour, minute, tzinfo=UTC) + timedelta(milliseconds=ms)
    return int(moment.timestamp() * 1000)


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def rel(estimate: float, exact: float) -> float:
    return abs(estimate - exact) / exact


# --- pure histogram math ---------------------------------------------------------------


def test_histogram_percentiles_use_nearest_rank_and_bucket_midpoints() -> None:
    """p50/p95 land in the bucket holding the nearest-rank value, at its midpoint."""
    h = Histogram.merge([{"z": "1", "10": "8", "100": "1", "sum_us": "5000"}])
    assert h.count == 10
    assert h.mean_ms() == pytest.approx(0.5)
    assert h.percentile_ms(10) == 0.0  # rank 1 is the sub-microsecond one
    assert h.percentile_ms(50) == pytest.approx(2 * 1.02**10 / 2.02)
    assert h.percentile_ms(95) == pytest.approx(2 * 1.02**100 / 2.02)


def test_histogram_merges_days_and_ignores_unknown_fields() -> None:
    """Day hashes add up field by field; a field of a future format is skipped."""
    h = Histogram.merge([{"3": "2", "sum_us": "10"}, {"3": "1", "-5": "4", "new": "9"}])
    assert h.buckets == {3: 3, -5: 4} and h.sum_us == 10 and h.count == 7


def test_empty_histogram_reads_as_zero() -> None:
    """No executions: averages and percentiles are 0, not an error."""
    h = Histogram()
    assert (h.count, h.mean_ms(), h.percentile_ms(95)) == (0, 0.0, 0.0)


def test_cumulative_buckets_never_count_a_value_above_the_bound() -> None:
    """A fine bucket counts under `le` only when its whole range is at or below it."""
    edge = math.floor(math.log(5) / math.log(1.02))  # last fine bucket entirely ≤ 5 ms
    h = Histogram.merge([{"z": "1", str(edge): "2", str(edge + 1): "3"}])
    assert h.cumulative([0.005, 0.01]) == [(0.005, 3), (0.01, 6)]


def test_days_outside_one_to_seven_are_refused() -> None:
    """`days` is an integer from 1 to 7, nothing else."""
    for bad in (0, 8, -1, "3", 2.0, True):
        with pytest.raises(ValidationError):
            metrics.get_metrics_summary(bad)  # type: ignore[arg-type]


def test_failure_record_carries_error_stack_context_payload() -> None:
    """The failure record keeps the error, its stack, the context and the payload."""
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        raw = failure_record("j1", exc, {"attempt": 2}, {"a": 1}, now=5)
    import json

    record = json.loads(raw)
    assert record["error"] == "RuntimeError: boom"
    assert "Traceback" in record["stack"] and "raise RuntimeError" in record["stack"]
    assert record["context"] == {"attempt": 2} and record["payload"] == {"a": 1}
    assert record["failed_at"] == 5 and record["job_id"] == "j1"


# --- recording and reading through the gateway -----------------------------------------


@pytest.fixture
def client(rest: RestClient) -> RestClient:
    return rest


def test_summary_matches_a_known_sequence_across_a_day_boundary(client: RestClient) -> None:
    """Counters and times add up per UTC day; `days` picks exactly the last N days."""
    late = at(2026, 3, 10, 23, 59, ms=59_500)  # 0.5 s before midnight UTC
    early = late + 1_000  # 0.5 s after: the next day
    for name, by in [
        (keys.SUBMITTED, 4),
        (keys.SUCCEEDED, 3),
        (keys.FAILED, 2),
        (keys.RETRIED, 1),
        (keys.RATE_LIMIT_BLOCKED, 2),
    ]:
        metrics.increment_counter(name, by, now_ms=late, client=client)
    metrics.increment_counter(keys.SUBMITTED, 6, now_ms=early, client=client)
    metrics.increment_counter(keys.FAILED, now_ms=early, client=client)
    metrics.increment_counter(keys.DEAD, now_ms=early, client=client)
    metrics.increment_counter(keys.RATE_LIMIT_BLOCKED, 3, now_ms=early, client=client)
    for start, end in [(late - 100, late), (late - 300, late)]:
        metrics.record_job_timing("j", start, now_ms=end, client=client)
    metrics.record_job_timing("j", early - 50, now_ms=early, client=client)

    today = metrics.get_metrics_summary(1, now_ms=early + 3_600_000, client=client)
    assert today["totalJobs"] == 6 and today["failedJobs"] == 1 and today["deadJobs"] == 1
    assert today["succeededJobs"] == 0 and today["retriedJobs"] == 0
    assert today["rateLimit"] == {"hits": 9, "blocked": 3}
    assert today["executions"] == 1 and today["avgExecutionTime"] == 50.0

    both = metrics.get_metrics_summary(2, now_ms=early + 3_600_000, client=client)
    assert (both["totalJobs"], both["failedJobs"], both["succeededJobs"]) == (10, 3, 3)
    assert (both["retriedJobs"], both["deadJobs"]) == (1, 1)
    assert both["rateLimit"] == {"hits": 15, "blocked": 5}
    assert both["executions"] == 3 and both["avgExecutionTime"] == 150.0
    assert rel(both["p50ExecutionTime"], 100) < 0.01
    assert rel(both["p95ExecutionTime"], 300) < 0.01
    assert both["days"] == 2 and both["generatedAt"] == "2026-03-11T01:00:00.500Z"

    # Six days later the late day is the seventh day back; seven days later it is gone.
    assert (
        metrics.get_metrics_summary(7, now_ms=late + 6 * DAY_MS, client=client)["totalJobs"] == 10
    )
    assert metrics.get_metrics_summary(7, now_ms=late + 7 * DAY_MS, client=client)["totalJobs"] == 6


def test_expired_days_count_as_zero(client: RestClient, backend: valkey.Valkey) -> None:
    """Once a day's keys expire, its jobs and times leave the summary; the rest stay."""
    now = at(2026, 5, 20)
    for back in range(3):
        metrics.increment_counter(
            keys.SUBMITTED, 10**back, now_ms=now - back * DAY_MS, client=client
        )
        metrics.record_timings([10.0 * (back + 1)], now_ms=now - back * DAY_MS, client=client)
    assert metrics.get_metrics_summary(7, now_ms=now, client=client)["totalJobs"] == 111
    gone = keys.day(now - DAY_MS)
    for key in (keys.counter_key(gone, keys.SUBMITTED), keys.exec_times_key(gone)):
        backend.pexpire(key, 1)
    while backend.exists(keys.exec_times_key(gone)) or backend.exists(
        keys.counter_key(gone, keys.SUBMITTED)
    ):
        pass  # expiry is lazy on access: EXISTS deletes an expired key
    summary = metrics.get_metrics_summary(7, now_ms=now, client=client)
    assert summary["totalJobs"] == 101
    assert summary["executions"] == 2 and summary["avgExecutionTime"] == 20.0


def test_every_daily_key_expires_within_seven_days(
    client: RestClient, backend: valkey.Valkey
) -> None:
    """Daily counters and histograms carry a 7-day TTL; totals are bounded hashes instead."""
    metrics.increment_counter(keys.SUCCEEDED, client=client)
    metrics.increment_counter("smoke_scratch", client=client)
    metrics.record_timings([1.0, 2.0], client=client)
    metrics.record_failed_job("j9", "nope", {}, client=client)
    for key in backend.keys("*"):
        if key in (keys.TOTALS, keys.exec_times_key()):
            assert backend.ttl(key) == -1
        else:
            assert 0 < backend.ttl(key) <= keys.METRICS_TTL_S, key
    # The scratch counter stays out of the all-time totals: its fields are fixed.
    assert backend.hgetall(keys.TOTALS) == {keys.SUCCEEDED: "1"}


def test_increment_counter_returns_the_day_value(client: RestClient) -> None:
    """Successive increments on one day return the running count; `by` must be positive."""
    now = at(2026, 1, 2)
    assert metrics.increment_counter("x", now_ms=now, client=client) == 1
    assert metrics.increment_counter("x", 4, now_ms=now, client=client) == 5
    assert metrics.increment_counter(keys.FAILED, 2, now_ms=now, client=client) == 2
    with pytest.raises(ValidationError):
        metrics.increment_counter("x", 0, client=client)


def test_failed_job_record_round_trips(client: RestClient, backend: valkey.Valkey) -> None:
    """`record_failed_job` stores error, stack, context and payload for 7 days."""
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        metrics.record_failed_job("abc", exc, {"queue": "q"}, {"p": [1]}, client=client)
    record = metrics.get_failed_job("abc", client=client)
    assert record is not None and record["error"] == "ValueError: bad input"
    assert "Traceback" in record["stack"] and record["payload"] == {"p": [1]}
    assert 0 < backend.ttl(keys.failed_key("abc")) <= keys.METRICS_TTL_S
    assert metrics.get_failed_job("unknown", client=client) is None


def test_percentiles_within_one_percent_on_thousands_of_timings(client: RestClient) -> None:
    """avg, p50, p95 and p99 over a multi-day window stay within 1% of the exact values."""
    rng = random.Random(20261126)
    now = at(2026, 7, 7, 18)
    everything: list[float] = []
    for back in range(4):
        day_values = [round(rng.lognormvariate(math.log(80), 1.1), 3) for _ in range(2_500)]
        day_values += [round(rng.uniform(0.5, 5.0), 3) for _ in range(200)]
        for i in range(0, len(day_values), 900):
            metrics.record_timings(
                day_values[i : i + 900], now_ms=now - back * DAY_MS, client=client
            )
        everything += day_values
    summary = metrics.get_metrics_summary(7, now_ms=now, client=client)
    assert summary["executions"] == len(everything)
    exact_avg = sum(everything) / len(everything)
    assert rel(summary["avgExecutionTime"], exact_avg) < 1e-4  # exact but for rounding
    for p in (50, 95, 99):
        assert rel(summary[f"p{p}ExecutionTime"], nearest_rank(everything, p)) < 0.01, p


def test_day_histogram_stays_bounded_at_100k_jobs(
    client: RestClient, backend: valkey.Valkey
) -> None:
    """100k timings over the whole range (1 µs .. clamp) keep a day under a fixed size."""
    rng = random.Random(7)
    now = at(2026, 8, 8)
    day_key = keys.exec_times_key(keys.day(now))
    sizes = []
    for _ in range(20):
        batch = [10 ** rng.uniform(-4, 9) for _ in range(5_000)]  # 0.1 µs .. 11 days
        metrics.record_timings(batch, now_ms=now, client=client)
        sizes.append(backend.hlen(day_key))
    assert sum(int(v) for k, v in backend.hgetall(day_key).items() if k != "sum_us") == 100_000
    assert max(sizes) <= 1_300  # ~1,272 log buckets + "z" + "sum_us", whatever the volume
    assert backend.memory_usage(day_key) <= 64 * 1024  # ~49 KB measured on Valkey 8
    assert backend.hlen(keys.exec_times_key()) <= 1_300


def test_gauges_read_the_queue(client: RestClient, backend: valkey.Valkey) -> None:
    """Depth, in flight, retrying, dead letters and the oldest job's age come from the queue."""
    now = at(2026, 2, 2)
    for i, enqueued in enumerate([now - 90_000, now - 30_000, now - 1_000]):
        backend.lpush(keys.REQUEST_QUEUE, f'{{"id":"j{i}","enqueued_at":{enqueued}}}')
    backend.hset(keys.leased_key(keys.REQUEST_QUEUE), mapping={"a": "{}", "b": "{}"})
    backend.hset(keys.delayed_key(keys.REQUEST_QUEUE), "c", "{}")
    backend.lpush(keys.dead_key(keys.REQUEST_QUEUE), "{}", "{}", "{}", "{}")
    summary = metrics.get_metrics_summary(3, now_ms=now, client=client)
    assert (
        summary["queueDepth"],
        summary["inFlight"],
        summary["retryingJobs"],
        summary["deadLetterDepth"],
    ) == (3, 2, 1, 4)
    assert summary["oldestQueuedAgeSeconds"] == 90.0
    backend.delete(keys.REQUEST_QUEUE)
    assert (
        metrics.get_metrics_summary(1, now_ms=now, client=client)["oldestQueuedAgeSeconds"] == 0.0
    )


def test_summary_is_one_round_trip_for_any_days(client: RestClient, stack: Any) -> None:
    """Whatever `days`, the summary costs exactly one REST request."""
    metrics.increment_counter(keys.SUBMITTED, client=client)
    metrics.record_timings([3.0], client=client)
    for days in range(1, 8):
        before, stack_before = client.round_trips, stack.server.request_count
        metrics.get_metrics_summary(days, client=client)
        assert client.round_trips - before == 1
        assert stack.server.request_count - stack_before == 1


def test_prometheus_snapshot_is_one_round_trip_and_adds_up(
    client: RestClient, stack: Any, backend: valkey.Valkey
) -> None:
    """The snapshot reads all-time totals, gauges and the histogram in one request."""
    now = at(2026, 4, 4)
    for back, name in enumerate([keys.SUBMITTED, keys.SUBMITTED, keys.RATE_LIMIT_BLOCKED]):
        metrics.increment_counter(name, 2, now_ms=now - back * 10 * DAY_MS, client=client)
    metrics.record_timings([2.0, 40.0, 700.0, 20_000.0], now_ms=now, client=client)
    backend.lpush(keys.REQUEST_QUEUE, f'{{"enqueued_at":{now - 5_000}}}')
    before = stack.server.request_count
    snap = metrics.get_prometheus_snapshot(now_ms=now, client=client)
    assert stack.server.request_count - before == 1
    assert snap.totals[keys.SUBMITTED] == 4 and snap.totals[keys.RATE_LIMIT_BLOCKED] == 2
    assert snap.gauges.queue_depth == 1 and snap.gauges.oldest_queued_age_s == 5.0
    cumulative = dict(snap.times.cumulative(prometheus.DURATION_BUCKETS_S))
    assert (cumulative[0.005], cumulative[0.05], cumulative[1.0], cumulative[30.0]) == (1, 2, 3, 4)
    text = prometheus.render_prometheus(snap).decode()
    assert "agent_rebalance_jobs_submitted_total 4.0" in text
    assert "agent_rebalance_rate_limit_hits_total 6.0" in text
    assert 'agent_rebalance_job_duration_seconds_bucket{le="+Inf"} 4.0' in text
    assert "agent_rebalance_job_duration_seconds_sum 20.742" in text


def test_check_rate_limit_is_the_submit_limiter(client: RestClient) -> None:
    """The original operation allows `limit` requests per window and counts the blocked one."""
    now = at(2026, 6, 6)
    outcomes = [
        metrics.check_rate_limit("user:1 *", 2, 60, now_ms=now + i, client=client) for i in range(3)
    ]
    assert [o.allowed for o in outcomes] == [True, True, False]
    summary = metrics.get_metrics_summary(1, now_ms=now, client=client)
    assert summary["rateLimit"]["blocked"] == 1


def test_summary_counts_what_submit_and_drain_recorded(
    client: RestClient, settings: Any, backend: valkey.Valkey
) -> None:
    """Real submits and a real drain: one success, one retry waiting, one dead, one 429."""
    import dataclasses
    import time

    from core.auth import Principal
    from core.drain import DrainOptions, drain
    from core.errors import PermanentJobError, RateLimitedError
    from core.queue import QueuePolicy
    from core.submit import submit_job

    limited = dataclasses.replace(settings, rate_limit_max=3)
    user = Principal("user-7", "pk")
    plans = {}
    for plan in ("ok", "retry", "dead"):
        plans[submit_job(client, limited, user, rebalance(plan=plan)).job_id] = plan
    with pytest.raises(RateLimitedError):
        submit_job(client, limited, user, rebalance(plan="blocked"))

    def processor(job: Any) -> bool:
        plan = job.payload["metadata"]["plan"]
        if plan == "dead":
            raise PermanentJobError("unknown asset")
        return plan == "ok"  # False: try again later

    ends = time.monotonic() + 5
    drain(
        client,
        processor,
        lambda: int((ends - time.monotonic()) * 1000),
        # One wallet: serialized, its later jobs would wait behind the retry.
        policy=QueuePolicy(retry_base_ms=60_000, retry_max_ms=60_000, serialize_field=""),
        options=DrainOptions(safety_margin_ms=0, idle_exit_ms=50, poll_interval_ms=10),
    )
    summary = metrics.get_metrics_summary(1, client=client)
    assert (summary["totalJobs"], summary["succeededJobs"], summary["failedJobs"]) == (3, 1, 2)
    assert (summary["retriedJobs"], summary["deadJobs"]) == (1, 1)
    assert summary["rateLimit"] == {"hits": 4, "blocked": 1}
    assert (
        summary["queueDepth"],
        summary["inFlight"],
        summary["retryingJobs"],
        summary["deadLetterDepth"],
    ) == (0, 0, 1, 1)
    assert summary["executions"] == 3
    snapshot = metrics.get_prometheus_snapshot(client=client)
    assert snapshot.totals == {
        keys.SUBMITTED: 3,
        keys.SUCCEEDED: 1,
        keys.FAILED: 2,
        keys.RETRIED: 1,
        keys.DEAD: 1,
        keys.CANCELLED: 0,
        keys.EXPIRED: 0,
        keys.RATE_LIMIT_BLOCKED: 1,
    }
