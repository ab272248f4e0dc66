"""A reliable queue on Redis lists, for any queue name: at-least-once, leased, never lost.

Keys (see `core.keys`): the list `<queue>` (LPUSH in, RPOP out: FIFO), the zset
`<queue>:schedule` (job id -> when it must come back: lease deadline or retry time, plus a
`~queue` member while the list may hold jobs), the hashes `<queue>:leased` and
`<queue>:delayed` (job id -> job JSON), the capped list `<queue>:dead`.

A consumer `claim`s a batch (one script: due work goes back to the queue, the batch moves to
`leased` with a lease) and `ack`s it (one script: every job ends ok / retry / dead /
release, its status record and the metrics move in the same script). A consumer killed at
any line leaves its jobs leased; the next claim after the lease expires hands them out
again. An ack is fenced by the delivery count it was claimed with, so a late ack of an
expired lease changes nothing, and no job is ever counted twice as succeeded.

`has_due_work` is the drain's idle check: a single `ZRANGE` on the schedule, one billed
command, that sees queued jobs, expired leases and due retries alike.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from core import keys
from core.errors import ConflictError, NotFoundError
from core.jobs import (
    Job,
    JobStatus,
    dumps,
    failure_record,
    new_job_id,
    now_ms,
    status_record,
    status_view,
)
from core.redis import RedisClient, Script, get_client
from core.settings import SERIALIZE_FIELDS, Settings, options_from, setting

OutcomeKind = Literal["ok", "retry", "dead", "release"]

_PRELUDE = ("_metrics.lua", "_queue.lua")
ENQUEUE = Script("enqueue.lua", prelude=_PRELUDE)
CLAIM = Script("claim.lua", prelude=(*_PRELUDE, "_notify.lua"))
CANCEL = Script("cancel.lua", prelude=_PRELUDE)
REPLAY = Script("replay.lua", prelude=_PRELUDE)
PURGE = Script("purge.lua")

REQUEUE_SCAN_LIMIT = 1000  # due entries moved per claim; the rest wait for the next claim
OUTBOX_CAP = 1000  # cancels waiting to be pushed; past it the oldest are dropped


@dataclass(frozen=True)
class QueuePolicy:
    """How long a lease lasts, how often a job is tried, how retries back off."""

    lease_ms: int = setting("job_lease_seconds", lambda s: s * 1000)
    max_attempts: int = setting("job_max_attempts")
    retry_base_ms: int = setting("retry_base_delay_ms")
    retry_max_ms: int = setting("retry_max_delay_ms")
    job_ttl_s: int = setting("job_ttl_s")
    metrics_ttl_s: int = keys.METRICS_TTL_S
    dead_cap: int = 10_000
    # The job field that names what must not run twice at once: `public_key` (a wallet),
    # `user_id`, or "" (no serialization).
    serialize_field: str = setting("serialize_by", lambda by: SERIALIZE_FIELDS[by])

    @classmethod
    def from_settings(cls, settings: Settings) -> QueuePolicy:
        return options_from(cls, settings)


@dataclass
class Claim:
    jobs: list[Job]
    requeued: int = 0
    dead: int = 0


@dataclass
class Outcome:
    """How one delivery ended. `ms` is the processor's execution time, when it ran."""

    job: Job
    kind: OutcomeKind
    ms: float | None = None
    result: Any = None
    error: str | None = None
    stack: str | None = None


@dataclass
class AckResult:
    acked: int
    stale: int
    counts: dict[str, int] = field(default_factory=dict)


def backoff_ms(
    attempt: int, base_ms: int, max_ms: int, rng: Callable[[], float] = random.random
) -> int:
    """Delay before delivery `attempt + 1`: exponential, with jitter, within [base, max].

    The ceiling doubles per attempt (base, 2 base, 4 base, ... capped at max); the delay is
    drawn uniformly between base and that ceiling, so retries of many jobs spread out.
    """
    ceiling = min(max_ms, base_ms * 2 ** max(0, attempt - 1))
    return int(base_ms + (ceiling - base_ms) * rng())


def enqueue(
    queue: str,
    data: Any,
    *,
    client: RedisClient | None = None,
    user_id: str = "",
    public_key: str = "",
    job_id: str | None = None,
    now: int | None = None,
    policy: QueuePolicy | None = None,
) -> str:
    """Add `data` (any JSON value) to `queue`; returns the new job id. One round trip.

    The original system's `enqueue(queue, data) -> job_id`: without `client`, the
    process-wide REST client of the environment's Upstash.
    """
    client = client or get_client()
    now = now_ms() if now is None else now
    job = Job(
        id=job_id or new_job_id(),
        payload=data,
        user_id=user_id,
        public_key=public_key,
        created_at=now,
        enqueued_at=now,
        queue=keys.queue_key(queue),
    )
    record = status_record(job, JobStatus.QUEUED, now)
    ttl = (policy or QueuePolicy()).job_ttl_s
    ENQUEUE(
        client,
        [keys.queue_key(queue), keys.schedule_key(queue), keys.job_key(job.id)],
        [job.to_json(), record, ttl, now],
    )
    return job.id


def has_due_work(client: RedisClient, queue: str, now: int | None = None) -> bool:
    """True when a claim would find something: queued jobs, expired leases, due retries."""
    now = now_ms() if now is None else now
    schedule = keys.schedule_key(queue)
    hit = client.execute(["ZRANGE", schedule, "-inf", now, "BYSCORE", "LIMIT", 0, 1])
    return bool(hit)


@dataclass
class Cycle:
    """What one claim script call did: the batch in hand settled, the next one leased."""

    jobs: list[Job]
    # The clock of the call (resends reuse it): the leases of `jobs` run from here.
    claimed_at: int
    acked: int = 0
    stale: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    requeued: int = 0
    dead: int = 0  # dead-lettered when a lease expired on the last allowed delivery
    expired: int = 0
    skipped: int = 0  # cancelled jobs popped and ended
    parked: int = 0  # jobs that wait behind their wallet's running job
    # Status changes to push (asked for with `notify=True`): (job id, connection ids, record
    # JSON as the script left it, '' when gone). See `core.push`.
    pushes: list[tuple[str, str, str]] = field(default_factory=list)


_TALLY = (
    "acked",
    "stale",
    "ok",
    "retry",
    "dead",
    "release",
    "requeued",
    "lease_dead",
    "expired",
    "skipped",
    "parked",
)


def claim_and_ack(
    client: RedisClient,
    queue: str,
    outcomes: Sequence[Outcome],
    batch: int,
    policy: QueuePolicy,
    *,
    now: int | None = None,
    receipt: str | None = None,
    rng: Callable[[], float] = random.random,
    notify: bool = False,
) -> Cycle:
    """Settle `outcomes` and lease up to `batch` more jobs, in ONE round trip.

    With a `receipt` token the call is safe to resend: a resend after the first call landed
    answers the same tallies and the same batch (kept for the lease), so a lost answer costs
    no delivery. Outcomes of expired leases are ignored (fenced by the delivery count).
    With `notify`, the cycle also names the status changes that WebSocket subscribers wait
    for (`Cycle.pushes`), found inside the same script.
    """
    now = now_ms() if now is None else now
    today = keys.day(now)
    key_list = [
        keys.queue_key(queue),
        keys.schedule_key(queue),
        keys.leased_key(queue),
        keys.delayed_key(queue),
        keys.dead_key(queue),
        keys.TOTALS,
        keys.busy_key(queue),
        keys.cancelled_key(queue),
        keys.receipt_key(queue, receipt or "-"),
        *(
            keys.counter_key(today, name)
            for name in (keys.SUCCEEDED, keys.FAILED, keys.RETRIED, keys.DEAD, keys.EXPIRED)
        ),
        keys.exec_times_key(today),
        keys.exec_times_key(),
        keys.WS_SUBS,
        keys.WS_OUTBOX,
    ]
    rows = [_ack_args(outcome, policy, now, rng) for outcome in outcomes]
    args = [
        now,
        batch,
        policy.lease_ms,
        policy.max_attempts,
        keys.JOB_KEY_PREFIX,
        keys.FAILED_KEY_PREFIX,
        policy.job_ttl_s,
        policy.metrics_ttl_s,
        policy.dead_cap,
        REQUEUE_SCAN_LIMIT,
        policy.serialize_field,
        keys.parked_prefix(queue),
        policy.lease_ms if receipt else 0,
        dumps(rows) if rows else "",
        "1" if notify else "0",
    ]
    leased, *numbers = CLAIM(client, key_list, args)
    pushes = json.loads(numbers.pop()) if len(numbers) > len(_TALLY) else []
    tally = dict(zip(_TALLY, map(int, numbers), strict=True))
    return Cycle(
        jobs=[Job.from_dict(data) for data in json.loads(leased)],
        claimed_at=now,
        acked=tally["acked"],
        stale=tally["stale"],
        counts={k: tally[k] for k in ("ok", "retry", "dead", "release")},
        requeued=tally["requeued"],
        dead=tally["lease_dead"],
        expired=tally["expired"],
        skipped=tally["skipped"],
        parked=tally["parked"],
        pushes=[(str(i), str(c), str(r)) for i, c, r in pushes],
    )


def claim(
    client: RedisClient, queue: str, batch: int, policy: QueuePolicy, now: int | None = None
) -> Claim:
    """Lease up to `batch` jobs (oldest first) after returning due work to the queue."""
    cycle = claim_and_ack(client, queue, (), batch, policy, now=now)
    return Claim(cycle.jobs, cycle.requeued, cycle.dead)


def ack(
    client: RedisClient,
    queue: str,
    outcomes: Sequence[Outcome],
    policy: QueuePolicy,
    now: int | None = None,
    rng: Callable[[], float] = random.random,
) -> AckResult:
    """Settle a claimed batch in one round trip; outcomes of expired leases are ignored."""
    if not outcomes:
        return AckResult(0, 0)
    cycle = claim_and_ack(client, queue, outcomes, 0, policy, now=now, rng=rng)
    return AckResult(cycle.acked, cycle.stale, cycle.counts)


def _ack_args(
    outcome: Outcome, policy: QueuePolicy, now: int, rng: Callable[[], float]
) -> list[Any]:
    job = outcome.job
    ms = "" if outcome.ms is None else f"{outcome.ms:.3f}"
    body = record = due = failure = ""
    if outcome.kind == "ok":
        record = status_record(job, JobStatus.SUCCEEDED, now, result=outcome.result)
    elif outcome.kind == "retry":
        body = job.to_json(last_error=outcome.error, claimed_at=None)
        due = str(now + backoff_ms(job.attempts, policy.retry_base_ms, policy.retry_max_ms, rng))
        record = status_record(job, JobStatus.RETRYING, now, error=outcome.error)
        failure = _failure(job, outcome, now)
    elif outcome.kind == "dead":
        body = job.to_json(last_error=outcome.error, claimed_at=None, dead_at=now, lock=None)
        record = status_record(job, JobStatus.DEAD, now, error=outcome.error)
        failure = _failure(job, outcome, now)
    else:  # release: never started, so this delivery does not count
        body = job.to_json(attempts=job.attempts - 1, claimed_at=None)
    return [job.id, job.attempts, outcome.kind, ms, record, body, due, failure, job.lock]


def cancel(
    client: RedisClient,
    queue: str,
    user_id: str,
    job_id: str,
    policy: QueuePolicy | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """Cancel `job_id` for its owner (one round trip); returns its status view.

    A `queued` or `retrying` job never starts; cancelling it again answers the same.
    `NotFoundError` for unknown or foreign ids, `ConflictError` once it runs or has ended.
    """
    if not keys.is_job_id(job_id):
        raise NotFoundError("no such job")
    policy = policy or QueuePolicy()
    now = now_ms() if now is None else now
    reply = CANCEL(
        client,
        [
            keys.job_key(job_id),
            keys.queue_key(queue),
            keys.schedule_key(queue),
            keys.leased_key(queue),
            keys.delayed_key(queue),
            keys.cancelled_key(queue),
            keys.busy_key(queue),
            keys.TOTALS,
            keys.counter_key(keys.day(now), keys.CANCELLED),
            keys.WS_SUBS,
            keys.WS_OUTBOX,
        ],
        [
            job_id,
            user_id,
            now,
            policy.job_ttl_s,
            policy.metrics_ttl_s,
            keys.parked_prefix(queue),
            OUTBOX_CAP,
        ],
    )
    outcome = str(reply[0])
    if outcome == "missing":
        raise NotFoundError("no such job")
    record = json.loads(reply[1])
    if outcome == "processing":
        view = status_view(record, json.loads(reply[2]))
        raise ConflictError(f"the job is {view['status']}: too late to cancel", view)
    view = status_view(record, None)
    if outcome == "conflict":
        raise ConflictError(f"the job is {view['status']}: too late to cancel", view)
    return view


def _failure(job: Job, outcome: Outcome, now: int) -> str:
    """The failure record of a delivery, with the context the claim script writes too."""
    context = {
        "attempts": job.attempts,
        "queue": job.queue,
        "user_id": job.user_id,
        "outcome": outcome.kind,
    }
    return failure_record(
        job.id, outcome.error or "", context, job.payload, now, outcome.stack or ""
    )


def list_dead(client: RedisClient, queue: str, limit: int = 100) -> list[Job]:
    """The newest `limit` dead jobs, newest first."""
    raw = client.execute(["LRANGE", keys.dead_key(queue), 0, max(0, limit - 1)])
    return [Job.from_json(item) for item in raw or []]


def replay(
    client: RedisClient,
    queue: str,
    job_ids: Sequence[str] = (),
    *,
    all_jobs: bool = False,
    policy: QueuePolicy | None = None,
    now: int | None = None,
) -> list[str]:
    """Put dead jobs back as `queued` with attempts reset; returns the ids replayed."""
    now = now_ms() if now is None else now
    ttl = (policy or QueuePolicy()).job_ttl_s
    replayed = REPLAY(
        client,
        [keys.dead_key(queue), keys.queue_key(queue), keys.schedule_key(queue)],
        [now, keys.JOB_KEY_PREFIX, ttl, "1" if all_jobs else "0", *job_ids],
    )
    return list(replayed or [])


def purge(client: RedisClient, queue: str) -> int:
    """Drop every dead job; returns how many."""
    return int(PURGE(client, [keys.dead_key(queue)]))


def depth_commands(queue: str) -> list[list[str | int]]:
    """The reads behind `depth`: queued, leased, delayed, dead (metrics pipeline them too)."""
    return [
        ["LLEN", keys.queue_key(queue)],
        ["HLEN", keys.leased_key(queue)],
        ["HLEN", keys.delayed_key(queue)],
        ["LLEN", keys.dead_key(queue)],
    ]


def depth(client: RedisClient, queue: str) -> dict[str, int]:
    """Queued, leased, delayed and dead counts, in one round trip."""
    queued, leased, delayed, dead = client.pipeline(depth_commands(queue))
    return {
        "queued": int(queued),
        "leased": int(leased),
        "delayed": int(delayed),
        "dead": int(dead),
    }


def decode_result(value: Any) -> Any:
    """A processor's return value as stored: dicts and lists pass, the rest is dropped."""
    return value if isinstance(value, dict | list) else None


__all__ = [
    "AckResult",
    "Claim",
    "Cycle",
    "Outcome",
    "QueuePolicy",
    "ack",
    "backoff_ms",
    "cancel",
    "claim",
    "claim_and_ack",
    "depth",
    "enqueue",
    "has_due_work",
    "list_dead",
    "purge",
    "replay",
]
