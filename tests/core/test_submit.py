"""Submitting and reading jobs in core: what is stored, idempotency, budgets, ownership."""

from __future__ import annotations

import contextlib
import json

import pytest

from core import keys
from core.auth import Principal
from core.errors import (
    IdempotencyConflictError,
    NotFoundError,
    RateLimitedError,
    ValidationError,
)
from core.jobs import Job
from core.redis import RestClient
from core.settings import Settings
from core.submit import fingerprint, get_status, submit_job
from devstack.billing import billed
from tests.bodies import rebalance, stored

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ALICE = Principal("alice", "pk-alice")
BOB = Principal("bob", "pk-bob")


def test_accepted_submit_stores_job_record_and_counters(
    rest: RestClient, settings: Settings, backend
) -> None:
    """The job is queued with its user and payload, the record is `queued` with a 24 h TTL."""
    body = rebalance(n=12345678901234567890, s="ü")
    job_id = submit_job(rest, settings, ALICE, body, now_ms=T0).job_id
    [raw] = backend.lrange(keys.REQUEST_QUEUE, 0, -1)
    job = Job.from_json(raw)
    assert (job.id, job.user_id, job.public_key, job.payload) == (
        job_id,
        "alice",
        "pk-alice",
        stored(body),
    )
    assert (job.attempts, job.created_at, job.enqueued_at, job.queue) == (
        0,
        T0,
        T0,
        keys.REQUEST_QUEUE,
    )
    record = json.loads(backend.get(keys.job_key(job_id)))
    assert record == {
        "id": job_id,
        "user_id": "alice",
        "status": "queued",
        "attempts": 0,
        "created_at": T0,
        "updated_at": T0,
    }
    assert 24 * 3600 - 5 < backend.ttl(keys.job_key(job_id)) <= 24 * 3600
    assert backend.zscore(keys.schedule_key(keys.REQUEST_QUEUE), keys.QUEUE_MARKER) == T0
    assert backend.get(keys.counter_key("2026-01-01", keys.SUBMITTED)) == "1"
    assert backend.hget(keys.TOTALS, keys.SUBMITTED) == "1"


def test_rate_limited_submit_stores_nothing_but_the_blocked_count(
    rest: RestClient, settings: Settings, backend
) -> None:
    """Past the limit: RateLimitedError with Retry-After, no job, the block counted."""
    for i in range(10):
        submit_job(rest, settings, ALICE, rebalance(i=i), now_ms=T0 + i * 1000)
    before = set(backend.keys("*"))
    with pytest.raises(RateLimitedError) as caught:
        submit_job(rest, settings, ALICE, rebalance(i=10), now_ms=T0 + 30_000)
    assert caught.value.retry_after_s == 30
    assert backend.llen(keys.REQUEST_QUEUE) == 10
    blocked = keys.counter_key("2026-01-01", keys.RATE_LIMIT_BLOCKED)
    assert set(backend.keys("*")) - before == {blocked}
    assert backend.hget(keys.TOTALS, keys.RATE_LIMIT_BLOCKED) == "1"


def test_idempotent_replay_returns_the_original_job_and_enqueues_nothing(
    rest: RestClient, settings: Settings, backend
) -> None:
    """Same key, same body (any key order): the original job, even past the rate limit."""
    first = submit_job(rest, settings, ALICE, rebalance(a=1, b=2), idempotency_key="k", now_ms=T0)
    for i in range(9):
        submit_job(rest, settings, ALICE, rebalance(i=i), now_ms=T0 + 1)
    with pytest.raises(RateLimitedError):
        submit_job(rest, settings, ALICE, rebalance(i=9), now_ms=T0 + 1)
    again = submit_job(
        rest, settings, ALICE, rebalance(b=2, a=1), idempotency_key="k", now_ms=T0 + 2
    )
    assert (again.job_id, again.replayed, first.replayed) == (first.job_id, True, False)
    assert backend.llen(keys.REQUEST_QUEUE) == 10
    idem = keys.idempotency_key("alice", "k")
    assert json.loads(backend.get(idem)) == {
        "jobId": first.job_id,
        "fingerprint": fingerprint(stored(rebalance(a=1, b=2))),
    }
    assert 24 * 3600 - 5 < backend.ttl(idem) <= 24 * 3600


def test_idempotency_key_with_another_body_conflicts(
    rest: RestClient, settings: Settings, backend
) -> None:
    """The same key from the same user with a different body is a conflict, nothing stored."""
    submit_job(rest, settings, ALICE, rebalance(a=1), idempotency_key="k", now_ms=T0)
    before = set(backend.keys("*"))
    with pytest.raises(IdempotencyConflictError):
        submit_job(rest, settings, ALICE, rebalance(a=2), idempotency_key="k", now_ms=T0)
    assert set(backend.keys("*")) == before
    assert backend.llen(keys.REQUEST_QUEUE) == 1


def test_idempotency_keys_are_per_user(rest: RestClient, settings: Settings, backend) -> None:
    """Another user's identical key and body is another job."""
    a = submit_job(rest, settings, ALICE, rebalance(a=1), idempotency_key="k", now_ms=T0)
    b = submit_job(rest, settings, BOB, rebalance(a=1), idempotency_key="k", now_ms=T0)
    assert a.job_id != b.job_id and not b.replayed


@pytest.mark.parametrize("payload", [[], "x", 1, None, [{"a": 1}]])
def test_payload_must_be_an_object(rest: RestClient, settings: Settings, backend, payload) -> None:
    """A non-object payload is a ValidationError before anything reaches Redis."""
    with pytest.raises(ValidationError):
        submit_job(rest, settings, ALICE, payload, now_ms=T0)
    assert backend.keys("*") == []


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "tab\there", "é", "\x00"])
def test_bad_idempotency_keys_are_refused(
    rest: RestClient, settings: Settings, backend, key: str
) -> None:
    """Empty, overlong or non-printable Idempotency-Keys are ValidationErrors."""
    with pytest.raises(ValidationError):
        submit_job(rest, settings, ALICE, rebalance(), idempotency_key=key, now_ms=T0)
    assert backend.keys("*") == []


def test_one_round_trip_per_submit(rest: RestClient, settings: Settings, backend) -> None:
    """Accepted, rate-limited, replayed and conflicting submits each cost one round trip."""
    submit_job(
        rest, settings, BOB, rebalance(), now_ms=T0
    )  # loads the script once (NOSCRIPT -> EVAL)
    calls = [
        lambda: submit_job(rest, settings, ALICE, rebalance(a=1), idempotency_key="k", now_ms=T0),
        lambda: submit_job(rest, settings, ALICE, rebalance(a=1), idempotency_key="k", now_ms=T0),
        lambda: submit_job(rest, settings, ALICE, rebalance(a=2), idempotency_key="k", now_ms=T0),
    ] + [lambda: submit_job(rest, settings, ALICE, rebalance(), now_ms=T0)] * 10
    for call in calls:
        before = rest.round_trips
        with contextlib.suppress(RateLimitedError, IdempotencyConflictError):
            call()
        assert rest.round_trips - before == 1


def test_accepted_submit_bills_at_most_nine_commands(
    rest: RestClient, settings: Settings, backend
) -> None:
    """EVALSHA + every command inside it stays within the 9-command budget."""
    submit_job(rest, settings, BOB, rebalance(), now_ms=T0)  # script loaded, day's counter created
    with billed(backend) as first_of_user:
        submit_job(rest, settings, ALICE, rebalance(x=1), now_ms=T0 + 1)
    with billed(backend) as steady:
        submit_job(rest, settings, ALICE, rebalance(x=2), now_ms=T0 + 2)
    assert first_of_user.total <= 9, first_of_user.by_command
    assert steady.total <= 9, steady.by_command
    assert steady.by_command.get("evalsha") == 1, steady.by_command


def test_blocked_submit_bills_a_handful(rest: RestClient, settings: Settings, backend) -> None:
    """A rate-limited submit reads the log and counts the block; the record written first
    (NX: a resend of a landed submit finds it) is taken back."""
    for _ in range(10):
        submit_job(rest, settings, ALICE, rebalance(), now_ms=T0)
    with billed(backend) as bill, pytest.raises(RateLimitedError):
        submit_job(rest, settings, ALICE, rebalance(), now_ms=T0)
    # EVALSHA, SET NX, GET, DEL, INCRBY (+EXPIRE), HINCRBY
    assert bill.total <= 7, bill.by_command
    assert "lpush" not in bill.by_command


def test_status_of_own_job(rest: RestClient, settings: Settings, backend) -> None:
    """The owner reads the design's status body."""
    job_id = submit_job(rest, settings, ALICE, rebalance(), now_ms=T0).job_id
    assert get_status(rest, "alice", job_id) == {
        "jobId": job_id,
        "status": "queued",
        "attempts": 0,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z",
    }


def test_status_of_a_leased_job_is_processing(
    rest: RestClient, settings: Settings, backend
) -> None:
    """While a drain holds the job, its status reads `processing` with the current delivery."""
    job_id = submit_job(rest, settings, ALICE, rebalance(), now_ms=T0).job_id
    raw = backend.rpop(keys.REQUEST_QUEUE)
    claimed = Job.from_json(raw).to_json(attempts=1, claimed_at=T0 + 5000)
    backend.hset(keys.leased_key(keys.REQUEST_QUEUE), job_id, claimed)
    view = get_status(rest, "alice", job_id)
    assert (view["status"], view["attempts"], view["updatedAt"]) == (
        "processing",
        1,
        "2026-01-01T00:00:05.000Z",
    )


def test_unknown_foreign_and_malformed_ids_are_the_same_not_found(
    rest: RestClient, settings: Settings, backend
) -> None:
    """Another user's job, an unknown id and a malformed id raise the same NotFoundError."""
    job_id = submit_job(rest, settings, ALICE, rebalance(), now_ms=T0).job_id
    messages = set()
    for user, candidate in [
        ("bob", job_id),
        ("alice", "0" * 32),
        ("alice", "../x"),
        ("alice", job_id.upper()),
        ("alice", "*"),
    ]:
        with pytest.raises(NotFoundError) as caught:
            get_status(rest, user, candidate)
        messages.add(str(caught.value))
    assert len(messages) == 1


def test_status_read_is_one_round_trip(rest: RestClient, settings: Settings, backend) -> None:
    """A status read is one pipeline: record and lease together."""
    job_id = submit_job(rest, settings, ALICE, rebalance(), now_ms=T0).job_id
    before = rest.round_trips
    get_status(rest, "alice", job_id)
    assert rest.round_trips - before == 1
