"""The elastic drain on the real stack: heartbeats, admission, fan-out, leaving, wakes, costs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import valkey

from core import elastic, keys, queue
from core.auth import Principal
from core.drain import DrainOptions, drain
from core.elastic import SCHEDULED, WOKEN, Crew, ElasticOptions
from core.jobs import Job
from core.queue import QueuePolicy
from core.redis import RestClient
from core.settings import Settings
from core.submit import submit_job
from devstack.billing import billed
from devstack.lambda_events import LambdaContext
from tests.bodies import rebalance
from tests.core.conftest import Q

ELASTIC = ElasticOptions(wake=True, max_parallel=4, fanout_backlog=10, heartbeat_ms=15_000)
QUICK = DrainOptions(poll_interval_ms=20, poll_max_interval_ms=40, idle_exit_ms=150)
ALICE = Principal("alice", "pk-alice")


@pytest.fixture
def wakes() -> Iterator[list[dict[str, Any]]]:
    """Every wake asked for, recorded instead of started."""
    seen: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> bool:
        seen.append(event)
        return True

    elastic.use_waker(record)
    yield seen
    elastic.use_waker(None)


def fill(rest: RestClient, n: int) -> None:
    for i in range(n):
        queue.enqueue(Q, {"i": i}, client=rest)


def run_drain(
    rest: RestClient, crew: Crew, policy: QueuePolicy, options: DrainOptions = QUICK
) -> dict[str, Any]:
    context = LambdaContext(10_000)
    return drain(
        rest,
        lambda job: None,
        context.get_remaining_time_in_millis,
        policy=policy,
        options=replace(options, safety_margin_ms=100),
        crew=crew,
    ).as_dict()


def test_scheduled_drain_with_wake_costs_one_command_when_nothing_is_due(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy, wakes: list[dict[str, Any]]
) -> None:
    """The safety net's idle tick: one ZRANGE, one round trip, no heartbeat, no wake."""
    queue.has_due_work(rest, Q)  # connection warmed
    with billed(backend) as bill:
        summary = run_drain(rest, Crew(rest, ELASTIC, SCHEDULED), policy)
    assert summary["stopReason"] == "nothing_due"
    assert bill.by_command == {"zrange": 1}
    assert summary["roundTrips"] == 1 and summary["polls"] == 1
    assert not backend.exists(keys.drains_key(Q), keys.awake_key(Q)) and wakes == []


def test_each_idle_poll_of_a_woken_drain_bills_one_command(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy, wakes: list[dict[str, Any]]
) -> None:
    """Two woken drains over an empty queue differ in cost by exactly their extra polls."""
    options = replace(QUICK, poll_interval_ms=30, poll_max_interval_ms=30)
    run_drain(rest, Crew(rest, ELASTIC), policy, options)  # scripts loaded
    costs = []
    for idle_ms in (100, 400):
        with billed(backend) as bill:
            summary = run_drain(
                rest, Crew(rest, ELASTIC), policy, replace(options, idle_exit_ms=idle_ms)
            )
        costs.append((summary["polls"], bill.total))
    (short_polls, short_cost), (long_polls, long_cost) = costs
    assert long_polls > short_polls + 3
    assert long_cost - short_cost == long_polls - short_polls


def test_a_submit_wakes_only_while_no_drain_runs(
    rest: RestClient, backend: valkey.Valkey, settings: Settings
) -> None:
    """No drain: the first submit is told to wake one, the next ones are not (the lock); a
    joined drain keeps every submit from waking; once it left, a submit wakes again."""
    woke = replace(settings, drain_wake=True)
    assert [submit_job(rest, woke, ALICE, rebalance(n=i)).wake for i in range(3)] == [
        True,
        False,
        False,
    ]
    backend.delete(keys.awake_key(Q))  # the lock ran out
    crew = Crew(rest, ELASTIC)
    assert crew.join() is None
    assert submit_job(rest, woke, ALICE, rebalance(n=4)).wake is False
    backend.delete(Q, keys.schedule_key(Q))  # drained by someone
    assert crew.leave("idle") is False
    assert submit_job(rest, woke, ALICE, rebalance(n=5)).wake is True
    assert submit_job(rest, settings, ALICE, rebalance(n=6)).wake is False  # DRAIN_WAKE off


def test_a_submit_with_wake_bills_at_most_nine_commands(
    rest: RestClient, backend: valkey.Valkey, settings: Settings
) -> None:
    """The wake question is one command: an accepted submit stays within its budget."""
    woke = replace(settings, drain_wake=True)
    submit_job(rest, woke, Principal("bob", "pk-bob"), rebalance())  # day's counter created
    for n in range(2):  # the submit that takes the wake lock, then one that finds it
        with billed(backend) as bill:
            submit_job(rest, woke, ALICE, rebalance(n=n))
        assert bill.total <= 9, bill.by_command
        assert bill.by_command["set"] == 3, bill.by_command  # record NX, rate log, wake lock


def test_join_fans_out_to_the_backlog_and_never_past_max_parallel(
    rest: RestClient, backend: valkey.Valkey, wakes: list[dict[str, Any]]
) -> None:
    """50 queued, 10 per drain, at most 4: the first drain starts 3 more at once; the starts
    hold their places, so a fifth drain is refused; a started drain takes its own place."""
    fill(rest, 50)
    first = Crew(rest, ELASTIC)
    assert first.join() is None
    assert [w["wake"] for w in wakes] == ["fanout"] * 3 and first.started == 3
    assert elastic.running_drains(rest) == 4
    assert Crew(rest, ELASTIC).join() == "crowded"
    started = [Crew(rest, ELASTIC, WOKEN, w["token"]) for w in wakes]
    assert [crew.join() for crew in started] == [None] * 3
    assert elastic.running_drains(rest) == 4 and len(wakes) == 3  # no start beyond the four
    for crew in (first, *started):
        crew.close()


def test_no_fanout_while_the_backlog_fits_the_running_drains(
    rest: RestClient, wakes: list[dict[str, Any]]
) -> None:
    """10 queued jobs per drain is not more than 10: nobody else starts."""
    fill(rest, 10)
    crew = Crew(rest, ELASTIC)
    assert crew.join() is None
    crew.close()
    assert wakes == [] and elastic.running_drains(rest) == 1


def test_a_dead_drain_disappears_by_itself(rest: RestClient, backend: valkey.Valkey) -> None:
    """A drain that stops beating (killed) no longer counts once its heartbeat ran out, and
    no longer keeps submits from waking a drain."""
    now = [1_000_000]
    options = replace(ELASTIC, max_parallel=1)
    dead = Crew(rest, options, clock=lambda: now[0])
    assert dead.join() is None
    dead.close()  # killed: no beat, no leave
    now[0] += options.heartbeat_ms - 1
    assert Crew(rest, options, clock=lambda: now[0]).join() == "crowded"
    now[0] += 2
    alive = Crew(rest, options, clock=lambda: now[0])
    assert alive.join() is None
    alive.close()
    assert backend.zcard(keys.drains_key(Q)) == 1  # the dead entry was purged
    ttl_ms = backend.pttl(keys.awake_key(Q))
    assert 0 < ttl_ms <= options.heartbeat_ms


def test_a_beat_refreshes_the_heartbeat_and_fans_out_a_grown_backlog(
    rest: RestClient, backend: valkey.Valkey, wakes: list[dict[str, Any]]
) -> None:
    """Beats move the drain's expiry forward; a backlog that grew starts drains on a beat."""
    now = [1_000_000]
    crew = Crew(rest, ELASTIC, clock=lambda: now[0])
    assert crew.join() is None
    crew.close()
    fill(rest, 25)
    now[0] += 5000
    assert crew._beat(joining=False) is True
    assert backend.zscore(keys.drains_key(Q), crew.drain_id) == now[0] + ELASTIC.heartbeat_ms
    assert len(wakes) == 2 and backend.zcount(keys.drains_key(Q), now[0], "+inf") == 3


def test_leaving_takes_work_that_arrived_meanwhile(
    rest: RestClient, backend: valkey.Valkey, wakes: list[dict[str, Any]]
) -> None:
    """A job queued while the drain was running (no wake: the drain was there) is seen as
    the drain leaves: it joins again; at its deadline it hands the work over instead."""
    crew = Crew(rest, ELASTIC)
    assert crew.join() is None
    fill(rest, 1)
    assert crew.leave("idle") is True  # joined again
    assert backend.zscore(keys.drains_key(Q), crew.drain_id) is not None
    assert crew.leave("deadline") is False
    assert wakes == [{"wake": "handover", "token": ""}] and crew.started == 1


def test_a_woken_drain_processes_and_leaves_no_trace(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy, wakes: list[dict[str, Any]]
) -> None:
    """Woken on a queue of 5: all done, stop reason idle, heartbeat and awake key gone."""
    fill(rest, 5)
    summary = run_drain(rest, Crew(rest, ELASTIC, WOKEN, "t"), policy)
    assert (summary["succeeded"], summary["stopReason"], summary["started"]) == (5, "idle", 0)
    assert not backend.exists(keys.drains_key(Q), keys.awake_key(Q))
    assert queue.depth(rest, Q)["queued"] == 0


def test_the_wake_lock_survives_a_leaving_drain(rest: RestClient, backend: valkey.Valkey) -> None:
    """A drain leaving while a woken one is on its way keeps the lock: no second wake."""
    crew = Crew(rest, ELASTIC)
    assert crew.join() is None
    backend.set(keys.awake_key(Q), "~wake", px=10_000)
    assert crew.leave("idle") is False
    assert backend.get(keys.awake_key(Q)) == "~wake"


def test_role_of_tells_a_wake_from_a_schedule() -> None:
    """Our payload is a wake (with its token); EventBridge's event and anything else are not."""
    assert elastic.role_of({"wake": "fanout", "token": "abc"}) == (WOKEN, "abc")
    assert elastic.role_of({"source": "aws.events", "detail-type": "Scheduled Event"}) == (
        SCHEDULED,
        "",
    )
    assert elastic.role_of(None) == (SCHEDULED, "")


def test_foreign_jobs_are_still_jobs(rest: RestClient, backend: valkey.Valkey) -> None:
    """The backlog a drain sees counts the queue list, whoever pushed into it."""
    for i in range(30):
        backend.lpush(Q, Job(id=f"{i:032x}", payload={}, queue=Q).to_json())
    crew = Crew(rest, replace(ELASTIC, wake=False), SCHEDULED)
    seen: list[dict[str, Any]] = []
    elastic.use_waker(lambda event: seen.append(event) or True)
    try:
        assert crew.join() is None  # no DRAIN_WAKE: the scheduled drain does not skip
    finally:
        crew.close()
        elastic.use_waker(None)
    assert len(seen) == 2  # 30 queued, 10 per drain: two more
