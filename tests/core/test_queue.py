"""The reliable queue through the real gateway and server: order, leases, fencing, retries."""

from __future__ import annotations

import json
import threading
import time

import pytest
import valkey

from core import keys, queue
from core.jobs import Job
from core.queue import Outcome, QueuePolicy
from core.redis import RestClient
from core.settings import Settings
from devstack.billing import billed
from tests.core.conftest import Q


def ok(jobs: list[Job], ms: float = 1.0) -> list[Outcome]:
    return [Outcome(job, "ok", ms) for job in jobs]


def test_single_consumer_gets_jobs_in_fifo_order(rest: RestClient, policy: QueuePolicy) -> None:
    """Jobs come out in the order they went in, across batch boundaries."""
    ids = [queue.enqueue(Q, {"n": i}, client=rest) for i in range(25)]
    seen: list[str] = []
    while batch := queue.claim(rest, Q, 10, policy).jobs:
        seen += [job.id for job in batch]
        queue.ack(rest, Q, ok(batch), policy)
    assert seen == ids


def test_enqueue_stores_a_queued_record_with_a_day_ttl(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """The status record exists at once, `queued`, and expires within 24 h."""
    job_id = queue.enqueue(Q, {"a": 1}, user_id="u", client=rest)
    record = json.loads(backend.get(keys.job_key(job_id)))
    assert record["status"] == "queued" and record["attempts"] == 0
    assert 0 < backend.ttl(keys.job_key(job_id)) <= 24 * 3600


def test_payload_survives_the_round_trip_exactly(rest: RestClient, policy: QueuePolicy) -> None:
    """Empty lists, long numbers and unicode are not re-encoded by the Lua scripts."""
    payload = {
        "empty": [],
        "obj": {},
        "big": 12345678901234567890,
        "pi": 3.141592653589793,
        "text": "Grüße ✓ \n",
        "nested": [[], [1, {"x": []}]],
    }
    queue.enqueue(Q, payload, client=rest)
    (job,) = queue.claim(rest, Q, 5, policy).jobs
    assert job.payload == payload


def test_a_foreign_producer_job_is_wrapped_not_lost(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """Something LPUSHed by another producer is delivered with its JSON as the payload."""
    backend.lpush(Q, json.dumps({"legacy": True}))
    backend.lpush(Q, "not json at all")
    backend.lpush(Q, json.dumps({"id": "user:*:input", "body": "{}"}))
    jobs = queue.claim(rest, Q, 5, policy).jobs
    assert [job.payload for job in jobs] == [
        {"legacy": True},
        "not json at all",
        {"id": "user:*:input", "body": "{}"},
    ]
    assert all(keys.is_job_id(job.id) for job in jobs)
    assert len(jobs) == 3


def test_has_due_work_sees_queued_jobs_and_nothing_else(
    rest: RestClient, policy: QueuePolicy
) -> None:
    """Empty: no work. Enqueued: work. All leased (lease running): no work."""
    assert not queue.has_due_work(rest, Q)
    queue.enqueue(Q, {}, client=rest)
    assert queue.has_due_work(rest, Q)
    assert len(queue.claim(rest, Q, 10, policy).jobs) == 1
    assert not queue.has_due_work(rest, Q)


def test_an_expired_lease_is_delivered_again(rest: RestClient) -> None:
    """A consumer that never acks loses its lease; the next claim gets the job back."""
    short = QueuePolicy(lease_ms=150, max_attempts=5)
    job_id = queue.enqueue(Q, {"x": 1}, client=rest)
    first = queue.claim(rest, Q, 1, short).jobs[0]
    assert queue.claim(rest, Q, 1, short).jobs == []
    time.sleep(0.25)
    assert queue.has_due_work(rest, Q)
    again = queue.claim(rest, Q, 1, short)
    assert again.requeued == 1
    assert [j.id for j in again.jobs] == [job_id] and again.jobs[0].attempts == first.attempts + 1
    assert "lease expired" in (again.jobs[0].last_error or "")


def test_a_late_ack_of_an_expired_lease_changes_nothing(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """Only the current delivery's ack counts: success is recorded exactly once."""
    short = QueuePolicy(lease_ms=100, max_attempts=5)
    queue.enqueue(Q, {}, client=rest)
    stale = queue.claim(rest, Q, 1, short).jobs
    time.sleep(0.2)
    fresh = queue.claim(rest, Q, 1, short).jobs
    late = queue.ack(rest, Q, ok(stale), short)
    assert (late.acked, late.stale) == (0, 1)
    current = queue.ack(rest, Q, ok(fresh), short)
    assert (current.acked, current.stale) == (1, 0)
    assert queue.ack(rest, Q, ok(fresh), short).stale == 1
    assert backend.hget(keys.TOTALS, "succeeded") == "1"


def test_retry_waits_for_its_backoff_then_comes_back(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """A failed delivery is `retrying` with its error and is not claimable before it is due."""
    slow = QueuePolicy(lease_ms=10_000, max_attempts=5, retry_base_ms=300, retry_max_ms=300)
    job_id = queue.enqueue(Q, {}, client=rest)
    job = queue.claim(rest, Q, 1, slow).jobs[0]
    queue.ack(rest, Q, [Outcome(job, "retry", 2.0, error="ValueError: nope")], slow)
    record = json.loads(backend.get(keys.job_key(job_id)))
    assert record["status"] == "retrying" and record["last_error"] == "ValueError: nope"
    assert queue.claim(rest, Q, 1, slow).jobs == []
    time.sleep(0.35)
    (again,) = queue.claim(rest, Q, 1, slow).jobs
    assert again.id == job_id and again.attempts == 2


def test_dead_letter_after_the_last_attempt_with_a_failure_record(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """Every delivery counts; the last failure moves the job to the dead-letter list."""
    job_id = queue.enqueue(Q, {"p": 1}, user_id="alice", client=rest)
    for attempt in range(1, policy.max_attempts + 1):
        time.sleep(0.01)
        (job,) = queue.claim(rest, Q, 1, policy).jobs
        assert job.attempts == attempt
        kind = "retry" if attempt < policy.max_attempts else "dead"
        queue.ack(rest, Q, [Outcome(job, kind, 1.0, error=f"boom {attempt}", stack="tb")], policy)
    record = json.loads(backend.get(keys.job_key(job_id)))
    assert record["status"] == "dead" and record["attempts"] == 3
    failure = json.loads(backend.get(keys.failed_key(job_id)))
    assert failure["error"] == "boom 3" and failure["stack"] == "tb"
    assert failure["payload"] == {"p": 1} and failure["context"]["user_id"] == "alice"
    assert 0 < backend.ttl(keys.failed_key(job_id)) <= 7 * 24 * 3600
    assert [job.id for job in queue.list_dead(rest, Q)] == [job_id]
    totals = backend.hgetall(keys.TOTALS)
    assert (totals["failed"], totals["retried"], totals["dead"]) == ("3", "2", "1")


def test_a_lease_that_expires_on_the_last_attempt_dead_letters(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """A job whose consumers keep dying is not retried forever."""
    fragile = QueuePolicy(lease_ms=50, max_attempts=2)
    job_id = queue.enqueue(Q, {}, client=rest)
    for _ in range(2):
        assert queue.claim(rest, Q, 1, fragile).jobs
        time.sleep(0.08)
    result = queue.claim(rest, Q, 1, fragile)
    assert result.jobs == [] and result.dead == 1
    assert json.loads(backend.get(keys.job_key(job_id)))["status"] == "dead"
    failure = json.loads(backend.get(keys.failed_key(job_id)))
    assert failure["payload"] == {} and "lease expired" in failure["error"]


def test_release_puts_an_unstarted_job_back_uncounted(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """A released job is queued again with the same attempt count, and no metric moves."""
    queue.enqueue(Q, {}, client=rest)
    (job,) = queue.claim(rest, Q, 1, policy).jobs
    queue.ack(rest, Q, [Outcome(job, "release")], policy)
    (again,) = queue.claim(rest, Q, 1, policy).jobs
    assert again.id == job.id and again.attempts == 1
    assert backend.hgetall(keys.TOTALS) == {}


def test_replay_resets_attempts_and_purge_empties(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """Replayed jobs are `queued` with attempts 0; unknown ids are not replayed."""
    one = QueuePolicy(max_attempts=1)
    ids = [queue.enqueue(Q, {"i": i}, client=rest) for i in range(3)]
    jobs = queue.claim(rest, Q, 3, one).jobs
    queue.ack(rest, Q, [Outcome(j, "dead", 1.0, error="x") for j in jobs], one)
    assert queue.replay(rest, Q, [ids[1], "0" * 32]) == [ids[1]]
    record = json.loads(backend.get(keys.job_key(ids[1])))
    assert (record["status"], record["attempts"]) == ("queued", 0)
    (job,) = queue.claim(rest, Q, 5, policy).jobs
    assert job.id == ids[1] and job.attempts == 1 and job.last_error is None
    assert queue.purge(rest, Q) == 2
    assert queue.list_dead(rest, Q) == []


@pytest.mark.parametrize("batch", [1, 10, 50])
def test_a_batch_costs_two_round_trips_whatever_its_size(
    rest: RestClient, policy: QueuePolicy, batch: int
) -> None:
    """Claim and ack are one REST request each."""
    for i in range(batch):
        queue.enqueue(Q, {"i": i}, client=rest)
    before = rest.round_trips
    jobs = queue.claim(rest, Q, batch, policy).jobs
    queue.ack(rest, Q, ok(jobs), policy)
    assert len(jobs) == batch
    assert rest.round_trips - before == 2


def test_billed_commands_idle_poll_and_drained_job(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """An idle poll bills 1 command; a drained job at batch 10 bills at most 4."""
    queue.enqueue(Q, {}, client=rest)
    queue.ack(rest, Q, ok(queue.claim(rest, Q, 5, policy).jobs), policy)  # scripts now cached
    with billed(backend) as idle:
        assert not queue.has_due_work(rest, Q)
    assert idle.total == 1, idle.by_command
    for i in range(10):
        queue.enqueue(Q, {"i": i}, client=rest)
    with billed(backend) as drained:
        jobs = queue.claim(rest, Q, 10, policy).jobs
        queue.ack(rest, Q, ok(jobs), policy)
    assert len(jobs) == 10
    assert drained.total / len(jobs) <= 4, drained.by_command


def test_two_consumers_never_share_a_job(rest: RestClient, settings: Settings) -> None:
    """Concurrent claims hand every job to exactly one consumer while its lease runs."""
    lease = QueuePolicy(lease_ms=60_000, max_attempts=5)
    ids = {queue.enqueue(Q, {"i": i}, client=rest) for i in range(120)}
    seen: list[list[str]] = [[], []]

    def consume(slot: int) -> None:
        client = RestClient(settings.upstash_redis_rest_url, settings.upstash_redis_rest_token)
        while batch := queue.claim(client, Q, 7, lease).jobs:
            seen[slot] += [job.id for job in batch]
            queue.ack(client, Q, ok(batch), lease)
        client.close()

    threads = [threading.Thread(target=consume, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(ids)


@pytest.mark.parametrize(
    ("attempt", "rng", "expected"),
    [
        (1, 0.0, 100),
        (1, 1.0, 100),
        (2, 1.0, 200),
        (3, 1.0, 400),
        (3, 0.5, 250),
        (10, 1.0, 1000),
        (10, 0.0, 100),
    ],
)
def test_backoff_is_exponential_with_jitter_inside_the_bounds(
    attempt: int, rng: float, expected: int
) -> None:
    """Ceiling doubles per attempt up to the max; the draw lies between base and ceiling."""
    assert queue.backoff_ms(attempt, 100, 1000, lambda: rng) == expected


def test_the_lua_and_python_writers_of_each_record_agree_on_its_shape(
    rest: RestClient, backend
) -> None:
    """Status and failure records are written by Python (acks) and by Lua (expiry, lease
    loss, cancel, replay): the same fields, the same context, whoever writes them."""
    import json

    from core.queue import Outcome

    now = 1_767_225_600_000
    expired = queue.enqueue(Q, {"a": 1}, client=rest, now=now - 10_000)
    raw = json.loads(backend.lindex(keys.queue_key(Q), 0))
    raw["expires_at"] = now - 1
    backend.lset(keys.queue_key(Q), 0, json.dumps(raw))
    assert queue.claim(rest, Q, 10, QueuePolicy(), now=now).jobs == []
    lua_status = json.loads(backend.get(keys.job_key(expired)))

    fragile = QueuePolicy(lease_ms=10, max_attempts=1)
    lost = queue.enqueue(Q, {"b": 2}, client=rest, now=now)
    queue.claim(rest, Q, 10, fragile, now=now)
    queue.claim(rest, Q, 10, fragile, now=now + 100)  # the lease expired on its last delivery
    lua_failure = json.loads(backend.get(keys.failed_key(lost)))

    failing = queue.enqueue(Q, {"b": 2}, client=rest, now=now + 200)
    (job,) = queue.claim(rest, Q, 10, fragile, now=now + 200).jobs
    queue.ack(rest, Q, [Outcome(job, "dead", 1.0, error="x")], fragile, now=now + 201)
    py_status = json.loads(backend.get(keys.job_key(failing)))
    py_failure = json.loads(backend.get(keys.failed_key(failing)))
    assert py_status["status"] == "dead" and lua_status["status"] == "expired"
    assert set(lua_status) == set(py_status)
    assert set(lua_failure) == set(py_failure)
    assert set(lua_failure["context"]) == set(py_failure["context"])
    assert lua_failure["payload"] == py_failure["payload"] == {"b": 2}

    cancelled = queue.enqueue(Q, {"c": 3}, client=rest, now=now + 300)
    queue.cancel(rest, Q, "", cancelled, now=now + 301)
    replayed = queue.replay(rest, Q, [failing], now=now + 302)
    for job_id, status in ((cancelled, "cancelled"), (failing, "queued")):
        record = json.loads(backend.get(keys.job_key(job_id)))
        assert record["status"] == status
        assert set(record) == set(py_status) - {"last_error"}
    assert replayed == [failing]


def test_a_resent_claim_answers_the_same_batch_leased_from_the_first_calls_clock(
    rest: RestClient, backend
) -> None:
    """The drain resends a claim with the same receipt and clock until one answer arrives:
    the resend leases nothing more, and the batch's leases run from `claimed_at`."""
    now, policy = 1_767_225_600_000, QueuePolicy(lease_ms=30_000)
    ids = [queue.enqueue(Q, {"n": n}, client=rest, now=now - 10) for n in range(3)]
    first = queue.claim_and_ack(rest, Q, (), 2, policy, now=now, receipt="r1")
    again = queue.claim_and_ack(rest, Q, (), 2, policy, now=now, receipt="r1")
    assert [j.id for j in again.jobs] == [j.id for j in first.jobs] == ids[:2]
    assert first.claimed_at == again.claimed_at == now
    for job in first.jobs:
        assert backend.zscore(keys.schedule_key(Q), job.id) == now + policy.lease_ms
    assert backend.llen(keys.queue_key(Q)) == 1
