"""`rebalance check metrics`: the original metrics smoke test against the configured Upstash.

Increments a scratch daily counter (`smoke_check`, never part of the all-time totals),
records one 42 ms timing, then reads the summary and the Prometheus snapshot back, each in
one round trip. The timing lands in the real histogram: one sample among the day's jobs.
"""

from __future__ import annotations

from collections.abc import Callable

from core import keys, metrics, prometheus
from core.errors import RebalanceError
from core.jobs import new_job_id, now_ms
from core.redis import RedisClient, make_client
from core.settings import Settings

Result = tuple[str, bool, str]
SCRATCH_COUNTER = "smoke_check"
TIMING_MS = 42


def run_checks(settings: Settings) -> list[Result]:
    """Run every metrics check in order; one failing does not stop the others."""
    client = make_client(settings)
    try:
        return [_run(name, check, client) for name, check in CHECKS]
    finally:
        client.close()


def _run(name: str, check: Callable[[RedisClient], str], client: RedisClient) -> Result:
    try:
        return name, True, check(client)
    except (RebalanceError, AssertionError) as exc:
        return name, False, str(exc) or type(exc).__name__


def _counter(client: RedisClient) -> str:
    first = metrics.increment_counter(SCRATCH_COUNTER, client=client)
    second = metrics.increment_counter(SCRATCH_COUNTER, client=client)
    assert second == first + 1, f"counter went from {first} to {second}, expected +1"
    return f"{SCRATCH_COUNTER} = {second} today"


def _timing(client: RedisClient) -> str:
    now = now_ms()
    duration = metrics.record_job_timing(
        f"smoke-{new_job_id()}", now - TIMING_MS, now, client=client
    )
    assert duration == TIMING_MS, f"recorded {duration} ms, expected {TIMING_MS}"
    return f"{duration:g} ms recorded"


def _summary(client: RedisClient) -> str:
    before = client.round_trips
    summary = metrics.get_metrics_summary(1, client=client)
    trips = client.round_trips - before
    assert trips == 1, f"the summary took {trips} round trips, expected 1"
    assert summary["executions"] >= 1, "the timing just recorded is not in today's summary"
    assert summary["avgExecutionTime"] > 0, "average execution time is 0"
    return (
        f"totalJobs={summary['totalJobs']} failedJobs={summary['failedJobs']} "
        f"avg={summary['avgExecutionTime']} ms p95={summary['p95ExecutionTime']} ms"
    )


def _prometheus(client: RedisClient) -> str:
    snapshot = metrics.get_prometheus_snapshot(client=client)
    body = prometheus.render_prometheus(snapshot).decode()
    missing = sorted(n for n in prometheus.exported_names() if n not in body)
    assert not missing, f"exposition lacks {missing}"
    assert snapshot.times.count >= 1, "the all-time histogram is empty"
    return f"{len(body)} bytes, {snapshot.totals[keys.SUBMITTED]} jobs submitted all-time"


CHECKS: list[tuple[str, Callable[[RedisClient], str]]] = [
    ("metrics.counter", _counter),
    ("metrics.timing", _timing),
    ("metrics.summary", _summary),
    ("metrics.prometheus", _prometheus),
]
