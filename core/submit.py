"""Submitting rebalance requests and reading their status: the core of the HTTP API.

`submit_job` does all the Redis work of one `POST /api/agent/rebalance` in ONE script
(`core/lua/submit.lua`), so one REST round trip whether the request is accepted, rate
limited or an idempotent replay:

1. with an `Idempotency-Key`: `agent:rebalance:idem:<user>:<sha256(key)>` holds
   `{"jobId", "fingerprint"}` for 24 h; the same body (same fingerprint: SHA-256 of the
   payload's canonical JSON) answers the original job, untouched by the rate limit; another
   body is an `IdempotencyConflictError`;
2. the sliding-window rate limit (`core/lua/_rate_limit.lua`), blocked requests counted;
3. `LPUSH` of the job onto `agent:rebalance:request` + the queue mark on its schedule;
4. `SET` of the status record `agent:rebalance:job:<id>` (`queued`, attempts 0, job TTL);
5. the `jobs` counter of the day and the totals hash.

Without a key an accepted submit bills at most 9 commands: EVALSHA, GET + SET of the rate
log, LPUSH, ZADD, SET, INCRBY (+ EXPIRE on the day's first job), HINCRBY. With `DRAIN_WAKE`
the script also asks whether a drain is running (one `SET … NX PX` on the awake key, see
`core.elastic`) and answers `wake` when none is: 9 commands (10 on the day's first job).

`get_status` reads a job's record and its lease in one round trip, counted against the
user's read limit (`core.rate_limit.limited_read`) when one is given; unknown ids, malformed
ids and other users' jobs are the same `NotFoundError`. `lastError` and `result` go through
the log redaction (`core.log.redact`) and are bounded in size before a user sees them: a
processor's exception text may quote a URL with a key in it. `watch_status` is the long
poll behind `?wait=N`: it reads again, with backoff, until the status moves or the wait is
over; each of its reads counts against the limit.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import keys
from core.auth import Principal
from core.errors import (
    IdempotencyConflictError,
    NotFoundError,
    RateLimitedError,
    UpstashError,
    ValidationError,
)
from core.jobs import (
    FINAL_STATUSES,
    Job,
    JobStatus,
    dumps,
    new_job_id,
    status_record,
    status_view,
)
from core.jobs import now_ms as clock_ms
from core.log import mask, redact
from core.rate_limit import ReadLimit, limited_read, retry_after_s
from core.redis import RedisClient, Script
from core.settings import Settings

IDEMPOTENCY_TTL_S = 24 * 3600
# Visible ASCII and spaces; a UUID or any client-made token fits, control bytes do not.
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")

_SUBMIT = Script("submit.lua", prelude=["_metrics.lua", "_queue.lua", "_rate_limit.lua"])


@dataclass(frozen=True)
class Submission:
    """An accepted request: its job id, and whether it replays an earlier one."""

    job_id: str
    replayed: bool = False
    wake: bool = False  # no drain is running: the caller wakes one (`core.elastic.wake`)


def validate_payload(payload: Any) -> dict[str, Any]:
    """The rebalance request, validated by `core.models.RebalanceRequest`, in its wire names
    (`ValidationError` with one detail per bad field otherwise)."""
    if not isinstance(payload, dict):
        raise ValidationError("the body must be a JSON object")
    from core.models import parse_request  # builds the validators: first request, not import

    return parse_request(payload)


def validate_idempotency_key(value: str | None) -> str | None:
    """None, or a key of 1..255 visible ASCII characters (`ValidationError` otherwise)."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value) or not value.strip():
        raise ValidationError("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return value


def fingerprint(payload: Any) -> str:
    """What makes two bodies 'the same' for idempotency: their canonical JSON."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_job(
    client: RedisClient,
    settings: Settings,
    principal: Principal,
    payload: Any,
    *,
    idempotency_key: str | None = None,
    now_ms: int | None = None,
) -> Submission:
    """Rate-limit, enqueue and record one rebalance request of `principal` (one round trip).

    Raises `ValidationError` (bad payload or key), `IdempotencyConflictError`,
    `RateLimitedError` (with `retry_after_s`), or `UpstashError`.
    """
    payload = validate_payload(payload)
    idempotency_key = validate_idempotency_key(idempotency_key)
    now = clock_ms() if now_ms is None else now_ms
    script_keys, args = submit_call(settings, principal, payload, idempotency_key, now)
    try:
        reply = _SUBMIT(client, script_keys, args)
    except UpstashError:
        # The answer was lost, or never came: the job may be stored. Resend once: the same job
        # id finds the stored job, and the script answers it instead of storing a second one.
        reply = _SUBMIT(client, script_keys, args)
    return _outcome(reply)


def submit_call(
    settings: Settings,
    principal: Principal,
    payload: dict[str, Any],
    idempotency_key: str | None,
    now: int,
) -> tuple[list[str], list[Any]]:
    """The submit script's KEYS and ARGV for a validated request (a new job id each call)."""
    job = _new_job(principal, payload, now, _valid_for_s(payload, settings))
    today = keys.day(now)
    script_keys = [
        keys.rate_key(principal.user_id),
        keys.REQUEST_QUEUE,
        keys.schedule_key(keys.REQUEST_QUEUE),
        keys.job_key(job.id),
        keys.counter_key(today, keys.SUBMITTED),
        keys.counter_key(today, keys.RATE_LIMIT_BLOCKED),
        keys.TOTALS,
        keys.awake_key(keys.REQUEST_QUEUE),
    ]
    print_ = fingerprint(payload)
    if idempotency_key is not None:
        script_keys.append(keys.idempotency_key(principal.user_id, idempotency_key))
    args: list[Any] = [
        now,
        settings.rate_limit_window_s * 1000,
        settings.rate_limit_max,
        job.id,
        job.to_json(),
        status_record(job, JobStatus.QUEUED, now),
        settings.job_ttl_s,
        keys.METRICS_TTL_S,
        keys.SUBMITTED,
        keys.RATE_LIMIT_BLOCKED,
        print_,
        dumps({"jobId": job.id, "fingerprint": print_}),
        IDEMPOTENCY_TTL_S,
        settings.drain_wake_lock_ms if settings.drain_wake else 0,
    ]
    return script_keys, args


def _valid_for_s(payload: dict[str, Any], settings: Settings) -> int | None:
    """The request's `validForSeconds`, else `JOB_VALID_FOR_S`, else no deadline."""
    value = payload.get("validForSeconds")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return settings.job_valid_for_s


def _new_job(
    principal: Principal, payload: dict[str, Any], now: int, valid_for_s: int | None
) -> Job:
    return Job(
        id=new_job_id(),
        payload=payload,
        user_id=principal.user_id,
        public_key=principal.public_key,
        created_at=now,
        enqueued_at=now,
        queue=keys.REQUEST_QUEUE,
        expires_at=None if valid_for_s is None else now + valid_for_s * 1000,
    )


def _outcome(reply: Any) -> Submission:
    if not isinstance(reply, list) or len(reply) not in (2, 3):
        # Never answer 202 unless the script said the job is stored.
        raise UpstashError("unexpected reply from the submit script")
    outcome, value = str(reply[0]), reply[1]
    if outcome == "accepted":
        return Submission(job_id=str(value), wake=len(reply) == 3 and reply[2] == 1)
    if outcome == "replay":
        return Submission(job_id=str(value), replayed=True)
    if outcome == "limited":
        raise RateLimitedError(retry_after_s(int(value)))
    if outcome == "conflict":
        raise IdempotencyConflictError(
            "this Idempotency-Key was already used with a different body"
        )
    raise UpstashError(f"unexpected reply from the submit script: {outcome[:40]!r}")


def get_status(
    client: RedisClient, user_id: str, job_id: str, *, limit: ReadLimit | None = None
) -> dict[str, Any]:
    """The status view of `job_id` if `user_id` owns it (one round trip), else `NotFoundError`;
    `RateLimitedError` when `limit` is spent."""
    if not keys.is_job_id(job_id):
        raise _not_found()  # nothing with that shape was ever stored: no lookup needed
    raw_record, raw_leased, lease_ends = limited_read(
        client,
        limit,
        [
            ["GET", keys.job_key(job_id)],
            ["HGET", keys.leased_key(keys.REQUEST_QUEUE), job_id],
            ["ZSCORE", keys.schedule_key(keys.REQUEST_QUEUE), job_id],
        ],
    )
    record = _json_object(raw_record)
    if record is None or record.get("user_id") != user_id or "id" not in record:
        raise _not_found()
    leased = _json_object(raw_leased)
    if leased is not None and lease_ends is not None and float(lease_ends) < clock_ms():
        leased = None  # its consumer is gone: it waits for the next claim, as the record says
    return public_view(status_view(record, leased))


MAX_ERROR_CHARS = 1000
MAX_RESULT_BYTES = 4096


def public_view(view: dict[str, Any]) -> dict[str, Any]:
    """The view as its owner may see it: `lastError` and `result` redacted like the logs
    (secrets, bearer tokens, JWTs, credential-named fields) and bounded in size."""
    if isinstance(view.get("lastError"), str):
        view["lastError"] = redact(view["lastError"])[:MAX_ERROR_CHARS]
    if "result" in view:
        result = _redacted(mask(view["result"]))
        if len(dumps(result).encode()) > MAX_RESULT_BYTES:
            del view["result"]
            view["resultTruncated"] = True
        else:
            view["result"] = result
    return view


def _redacted(value: Any) -> Any:
    """Every string inside `value` (keys too) through `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


# Every status a job can have (the same list as `core.models.STATUSES`, which a cold import
# does not load).
STATUSES = tuple(str(s) for s in JobStatus)
TERMINAL = frozenset(str(s) for s in FINAL_STATUSES)
MAX_WAIT_S = 5  # inside the status Lambda's 10 s, with room for a slow last read


def parse_watch(wait: str | None, since: str | None) -> tuple[int, str | None]:
    """`?wait=` (whole seconds, 0..5) and `?since=` (a status) or a `ValidationError`."""
    seconds = 0
    if wait is not None:
        if not wait.isdigit() or int(wait) > MAX_WAIT_S:
            raise ValidationError(f"wait must be a whole number of seconds from 0 to {MAX_WAIT_S}")
        seconds = int(wait)
    if since is not None and since not in STATUSES:
        raise ValidationError("since must be one of " + ", ".join(STATUSES))
    return seconds, since


def watch_status(
    client: RedisClient,
    user_id: str,
    job_id: str,
    wait_s: float,
    since: str | None = None,
    *,
    limit: ReadLimit | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The status once it differs from `since` (default: the status at the first read), is
    final, or `wait_s` has passed. Reads back off from 200 ms to 1 s: a watched job costs a
    few round trips a second at most, an unwatched read exactly one. Every read counts
    against `limit`: a first read over it is a `RateLimitedError`; a later one ends the
    wait with the status already read."""
    view = get_status(client, user_id, job_id, limit=limit)
    baseline = since or view["status"]
    deadline = clock() + wait_s
    pause = 0.2
    while view["status"] == baseline and view["status"] not in TERMINAL:
        left = deadline - clock()
        if left <= 0:
            break
        sleep(min(pause, left))
        pause = min(pause * 1.5, 1.0)
        try:
            view = get_status(client, user_id, job_id, limit=limit)
        except RateLimitedError:
            break  # the answer in hand is still true; the next poll will hear the 429
    return view


def _json_object(raw: Any) -> dict[str, Any] | None:
    """A stored JSON object, or None when absent or unreadable (never a 500 for bad data)."""
    if not isinstance(raw, str | bytes):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _not_found() -> NotFoundError:
    # One message for unknown and foreign ids: the answer must not reveal which it was.
    return NotFoundError("no such job")
