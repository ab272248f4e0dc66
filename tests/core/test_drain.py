"""The drain loop on the real stack: processing, outcomes, budget, idle polling, concurrency."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import valkey

from core import keys, queue
from core.drain import DrainOptions, drain
from core.errors import ConfigError, PermanentJobError
from core.jobs import Job
from core.queue import QueuePolicy
from core.redis import RestClient
from core.settings import Settings
from devstack.billing import billed
from devstack.lambda_events import LambdaContext
from tests.core.conftest import Q

FAST = DrainOptions(
    batch_size=10,
    concurrency=10,
    poll_interval_ms=20,
    poll_max_interval_ms=40,
    idle_exit_ms=150,
    safety_margin_ms=100,
)


def run(
    rest: RestClient,
    processor: Callable[[Job], Any],
    policy: QueuePolicy,
    budget_ms: int = 10_000,
    options: DrainOptions = FAST,
) -> dict[str, Any]:
    context = LambdaContext(budget_ms)
    return drain(
        rest, processor, context.get_remaining_time_in_millis, policy=policy, options=options
    ).as_dict()


def status_of(backend: valkey.Valkey, job_id: str) -> dict[str, Any]:
    return json.loads(backend.get(keys.job_key(job_id)))


def test_drain_processes_everything_and_reports(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """25 jobs, batches of 10: all succeed, results stored, summary adds up."""
    ids = [queue.enqueue(Q, {"i": i}, client=rest) for i in range(25)]
    summary = run(rest, lambda job: {"double": job.payload["i"] * 2}, policy)
    assert (summary["claimed"], summary["succeeded"], summary["batches"]) == (25, 25, 3)
    assert summary["stopReason"] == "idle" and summary["roundTrips"] >= 6
    assert status_of(backend, ids[7])["result"] == {"double": 14}
    assert backend.hget(keys.TOTALS, "succeeded") == "25"
    assert queue.depth(rest, Q) == {"queued": 0, "leased": 0, "delayed": 0, "dead": 0}


def test_outcomes_of_each_processor_answer(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """None/True done; False and errors retried; PermanentJobError dead at once."""
    answers: dict[str, Callable[[], Any]] = {
        "none": lambda: None,
        "true": lambda: True,
        "false": lambda: False,
        "error": lambda: 1 / 0,
        "permanent": lambda: (_ for _ in ()).throw(PermanentJobError("bad portfolio")),
    }
    ids = {name: queue.enqueue(Q, {"answer": name}, client=rest) for name in answers}
    summary = run(
        rest,
        lambda job: answers[job.payload["answer"]](),
        QueuePolicy(max_attempts=5, retry_base_ms=60_000, retry_max_ms=60_000),
    )
    assert (summary["succeeded"], summary["retried"], summary["dead"]) == (2, 2, 1)
    statuses = {name: status_of(backend, job_id) for name, job_id in ids.items()}
    assert statuses["none"]["status"] == statuses["true"]["status"] == "succeeded"
    assert statuses["false"]["status"] == "retrying"
    assert statuses["error"]["last_error"].startswith("ZeroDivisionError")
    assert statuses["permanent"]["status"] == "dead"
    assert statuses["permanent"]["last_error"] == "PermanentJobError: bad portfolio"


def test_async_processors_and_retries_until_dead(rest: RestClient, backend: valkey.Valkey) -> None:
    """An async processor that always fails is delivered max-attempts times, then dead."""
    calls: list[int] = []

    async def failing(job: Job) -> None:
        calls.append(job.attempts)
        await asyncio.sleep(0)
        raise RuntimeError("upstream down")

    job_id = queue.enqueue(Q, {}, client=rest)
    run(rest, failing, QueuePolicy(max_attempts=4, retry_base_ms=1, retry_max_ms=2))
    assert calls == [1, 2, 3, 4]
    assert status_of(backend, job_id)["status"] == "dead"
    assert [job.id for job in queue.list_dead(rest, Q)] == [job_id]


def test_a_batch_runs_concurrently_up_to_the_limit(rest: RestClient, policy: QueuePolicy) -> None:
    """With concurrency 4, four jobs are in the processor at once, never five."""
    running, peak = 0, 0
    lock = threading.Lock()

    async def slow(job: Job) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        await asyncio.sleep(0.05)
        with lock:
            running -= 1

    for i in range(10):
        queue.enqueue(Q, {"i": i}, client=rest)
    options = DrainOptions(**{**FAST.__dict__, "concurrency": 4})
    assert run(rest, slow, policy, options=options)["succeeded"] == 10
    assert peak == 4


def test_the_drain_returns_inside_its_budget_with_a_slow_processor(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """A processor that would run for a minute is cut at the budget; the job is retried."""
    job_id = queue.enqueue(Q, {}, client=rest)
    context = LambdaContext(1500)
    options = DrainOptions(**{**FAST.__dict__, "safety_margin_ms": 500, "idle_exit_ms": None})

    async def endless(job: Job) -> None:
        await asyncio.sleep(60)

    summary = drain(
        rest,
        endless,
        context.get_remaining_time_in_millis,
        policy=QueuePolicy(max_attempts=5),
        options=options,
    )
    assert context.get_remaining_time_in_millis() > 0
    assert summary.stopReason == "deadline" and summary.retried == 1
    record = status_of(backend, job_id)
    assert record["status"] == "retrying" and "timed out" in record["last_error"]


def test_jobs_not_started_before_the_deadline_are_released(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """Concurrency 1 and a budget for one job: the others go back untouched."""
    for i in range(3):
        queue.enqueue(Q, {"i": i}, client=rest)

    async def sleepy(job: Job) -> None:
        await asyncio.sleep(5)

    options = DrainOptions(
        **{**FAST.__dict__, "concurrency": 1, "safety_margin_ms": 200, "idle_exit_ms": None}
    )
    summary = run(rest, sleepy, QueuePolicy(max_attempts=5), budget_ms=800, options=options)
    assert (summary["retried"], summary["released"]) == (1, 2)
    jobs = queue.claim(rest, Q, 10, QueuePolicy())
    assert sorted(job.attempts for job in jobs.jobs) == [1, 1]


def test_idle_polls_bill_one_command_each(rest: RestClient, backend: valkey.Valkey) -> None:
    """After the first full claim, an idle drain polls with a single ZRANGE."""
    run(rest, lambda job: None, QueuePolicy())  # the claim script is now cached
    with billed(backend) as bill:
        summary = run(rest, lambda job: None, QueuePolicy())
    idle_polls = summary["polls"] - 1
    assert idle_polls >= 2
    assert bill.by_command.get("zrange") == idle_polls
    assert bill.by_command.get("evalsha") == 1
    # The first claim script runs GET (its receipt), ZRANGEBYSCORE, RPOP and ZREM inside it.
    assert bill.total == idle_polls + 1 + 4, bill.by_command


def test_backoff_while_idle_grows_the_pause(rest: RestClient) -> None:
    """Polls back off by the factor: 20 ms x2 up to 320 ms gives few polls in a second."""
    options = DrainOptions(
        batch_size=10,
        concurrency=1,
        poll_interval_ms=20,
        poll_max_interval_ms=320,
        backoff_factor=2,
        idle_exit_ms=1000,
        safety_margin_ms=100,
    )
    summary = run(rest, lambda job: None, QueuePolicy(), options=options)
    # 20+40+80+160+320+320 > 900: at most 7 polls; without backoff it would be ~50.
    assert 4 <= summary["polls"] <= 8


def test_two_concurrent_drains_never_run_the_same_job(rest: RestClient, settings: Settings) -> None:
    """Each job is processed once while its lease holds, whichever drain claims it."""
    ids = {queue.enqueue(Q, {"i": i}, client=rest) for i in range(80)}
    seen: list[str] = []
    lock = threading.Lock()

    def record(job: Job) -> None:
        with lock:
            seen.append(job.id)
        time.sleep(0.002)

    def one_drain() -> None:
        client = RestClient(settings.upstash_redis_rest_url, settings.upstash_redis_rest_token)
        options = DrainOptions(**{**FAST.__dict__, "batch_size": 5})
        run(client, record, QueuePolicy(lease_ms=60_000), options=options)
        client.close()

    threads = [threading.Thread(target=one_drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 80
    assert set(seen) == ids


def test_handler_runs_the_configured_processor(
    env: dict[str, str], backend: valkey.Valkey, monkeypatch: pytest.MonkeyPatch, rest: RestClient
) -> None:
    """The Lambda entry point drains with the settings from the environment."""
    from handlers import drain as drain_handler

    monkeypatch.setenv("REBALANCE_PROCESSOR", "core.processors.simulated:process")
    monkeypatch.setenv("SIM_LATENCY_MS", "1")
    monkeypatch.setenv("DRAIN_IDLE_EXIT_MS", "100")
    monkeypatch.setenv("DRAIN_SAFETY_MARGIN_MS", "100")
    job_id = queue.enqueue(Q, {"portfolio": "p1"}, user_id="u1", client=rest)
    summary = drain_handler.handler({"source": "aws.events"}, LambdaContext(5000))
    assert summary["succeeded"] == 1 and summary["stopReason"] == "idle"
    assert status_of(backend, job_id)["result"] == {"rebalanced": True, "attempts": 1}


def test_handler_fails_fast_on_a_bad_processor(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, rest: RestClient, backend: valkey.Valkey
) -> None:
    """A processor that cannot be imported is a ConfigError before any job is claimed."""
    from handlers import drain as drain_handler

    monkeypatch.setenv("REBALANCE_PROCESSOR", "no_such_module:process")
    queue.enqueue(Q, {}, client=rest)
    with pytest.raises(ConfigError, match="REBALANCE_PROCESSOR"):
        drain_handler.handler({}, LambdaContext(2000))
    assert queue.depth(rest, Q)["queued"] == 1


def test_a_processor_may_read_the_job_as_a_dict(rest: RestClient, backend: valkey.Valkey) -> None:
    """`job["payload"]`, `dict(job)` and attribute access all see the same six fields."""
    job_id = queue.enqueue(Q, {"targets": {"ETH": 1}}, user_id="u7", public_key="pk7", client=rest)
    seen: list[dict[str, Any]] = []
    run(rest, lambda job: seen.append(dict(job)) or job["payload"]["targets"], QueuePolicy())
    assert seen == [
        {
            "id": job_id,
            "user_id": "u7",
            "public_key": "pk7",
            "payload": {"targets": {"ETH": 1}},
            "attempts": 1,
            "idempotency_key": job_id,
        }
    ]
    assert status_of(backend, job_id)["result"] == {"ETH": 1}


def test_a_batch_that_no_longer_fits_the_budget_is_released(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """Jobs not started when the budget ends go back as they were, their delivery unspent."""
    for i in range(4):
        queue.enqueue(Q, {"i": i}, client=rest)
    out_of_time = threading.Event()

    def first_job(job: Job) -> None:
        out_of_time.set()  # the budget ends while the first job runs

    summary = drain(
        rest,
        first_job,
        lambda: 0 if out_of_time.is_set() else 60_000,
        policy=QueuePolicy(),
        options=DrainOptions(
            **{**FAST.__dict__, "batch_size": 4, "concurrency": 1, "safety_margin_ms": 0}
        ),
    )
    assert (summary.claimed, summary.succeeded, summary.released) == (4, 1, 3)
    assert summary.stopReason == "deadline"
    again = queue.claim(rest, Q, 10, QueuePolicy()).jobs
    assert sorted(job.payload["i"] for job in again) == [1, 2, 3]
    assert {job.attempts for job in again} == {1}


def test_at_the_defaults_a_batch_is_one_round_trip_and_a_job_bills_at_most_one_and_a_half(
    rest: RestClient, backend: valkey.Valkey, settings: Settings
) -> None:
    """The default drain (batch 300): the first claim, then one round trip per batch that
    acknowledges it and claims the next; at most 1.5 billed commands per job."""
    jobs = 900
    for i in range(jobs):
        queue.enqueue(Q, {"i": i}, public_key=f"wallet-{i}", client=rest)
    defaults = DrainOptions.from_settings(settings)
    assert (defaults.batch_size, defaults.concurrency) == (300, 300)
    options = DrainOptions(**{**defaults.__dict__, "idle_exit_ms": 0, "safety_margin_ms": 0})
    queue.claim(rest, "warm-up", 1, QueuePolicy())  # the claim script is cached
    trips = rest.round_trips
    with billed(backend) as bill:
        summary = drain(
            rest, lambda job: None, lambda: 60_000, policy=QueuePolicy(), options=options
        )
    assert summary.succeeded == jobs and summary.batches == jobs // 300
    # first claim + one per batch (the last one finds the queue empty and stops)
    assert rest.round_trips - trips == 1 + summary.batches
    assert bill.total / jobs <= 1.5, bill.by_command


def test_sync_processors_get_as_many_threads_as_the_concurrency(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """20 blocking 0.5 s jobs at concurrency 20 all run at once on the drain's own threads
    (asyncio's default pool has cpu_count + 4), so none times out inside a 2 s lease."""
    for i in range(20):
        queue.enqueue(Q, {"i": i}, client=rest)
    running, peak = 0, 0
    lock = threading.Lock()

    def blocking(job: Job) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.5)
        with lock:
            running -= 1

    options = DrainOptions(**{**FAST.__dict__, "batch_size": 20, "concurrency": 20})
    summary = run(rest, blocking, QueuePolicy(lease_ms=2000), options=options)
    assert (summary["succeeded"], summary["retried"]) == (20, 0)
    assert peak == 20


def test_a_busy_lambda_drain_reports_the_backlog_it_leaves(
    rest: RestClient, backend: valkey.Valkey, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a drain that did work, the handler's summary carries the queue's depth and its
    oldest job's age (the CloudWatch metrics' QueueDepth and OldestJobAge); an idle drain
    reads nothing more."""
    from handlers import drain as drain_handler

    monkeypatch.setenv("DRAIN_BATCH_SIZE", "2")
    monkeypatch.setenv("DRAIN_CONCURRENCY", "1")
    monkeypatch.setenv("DRAIN_IDLE_EXIT_MS", "0")
    monkeypatch.setenv("DRAIN_SAFETY_MARGIN_MS", "0")
    monkeypatch.setenv("SIM_LATENCY_MS", "0")
    from tests.support.caches import reset_caches

    reset_caches()
    for i in range(5):
        queue.enqueue(Q, {"i": i}, client=rest, now=int(time.time() * 1000) - 90_000)

    out_of_time = threading.Event()
    context = LambdaContext(60_000)
    real = context.get_remaining_time_in_millis
    monkeypatch.setattr(context, "get_remaining_time_in_millis",
                        lambda: 0 if out_of_time.is_set() else real())  # fmt: skip
    monkeypatch.setattr("core.processors.simulated.process", lambda job: out_of_time.set())
    drain_handler._processor.cache_clear()
    try:
        busy = drain_handler.handler({}, context)
    finally:
        drain_handler._processor.cache_clear()  # later tests get the real processor
    # one job ran, then the budget ended: the other claimed job went back unstarted
    assert (busy["claimed"], busy["succeeded"], busy["released"]) == (2, 1, 1)
    assert busy["queueDepth"] == 4 and busy["oldestAgeMs"] >= 90_000
    idle = drain_handler.handler({}, LambdaContext(0))
    assert "queueDepth" not in idle
