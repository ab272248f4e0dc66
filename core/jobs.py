"""Jobs: the values stored in Redis and the status view the API answers.

Two JSON shapes, both written only by Lua scripts or by code in `core`:

- the *job* (queue list, leased/delayed hashes, dead list):
  `{"id", "queue", "user_id", "public_key", "body", "attempts", "created_at", "enqueued_at",
  "last_error"?}` — `body` is the payload as JSON *text*, so the Lua scripts that bump
  `attempts` never re-encode a client's payload (Lua's cjson would turn `[]` into `{}` and
  round long numbers); `attempts` counts deliveries so far; times are epoch milliseconds.
  Always build it with `Job(...).to_json()`;
- the *status record* at `agent:rebalance:job:<id>` (24 h TTL):
  `{"id", "user_id", "status", "attempts", "created_at", "updated_at", "last_error"?,
  "result"?}` — written at submit and at every ack; while a job is leased its status is
  `processing`, read from the leased hash in the same round trip as the record.
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from core.log import redact


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# Statuses a job never leaves (a replayed dead job starts over as a new delivery history).
FINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


def new_job_id() -> str:
    """32 lowercase hex digits (a random UUID): unguessable, and never needs escaping."""
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ts_ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC string (`2026-11-26T17:50:05.123Z`)."""
    if ts_ms is None:
        return None
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_UNSET: Any = object()


class Job:
    """A delivery of work: what a processor receives.

    The payload is stored as JSON text (`body`) and decoded on first access: the drain
    hands most jobs to a processor that reads it, but never decodes one it only settles.
    """

    __slots__ = (
        "_body",
        "_payload",
        "attempts",
        "created_at",
        "enqueued_at",
        "expires_at",
        "extra",
        "id",
        "last_error",
        "public_key",
        "queue",
        "user_id",
    )

    def __init__(
        self,
        id: str,
        payload: Any = _UNSET,
        user_id: str = "",
        public_key: str = "",
        attempts: int = 0,
        created_at: int = 0,
        enqueued_at: int = 0,
        queue: str = "",
        last_error: str | None = None,
        expires_at: int | None = None,
        extra: dict[str, Any] | None = None,
        *,
        body: str | None = None,
    ) -> None:
        self.id, self.user_id, self.public_key = id, user_id, public_key
        self.attempts, self.created_at, self.enqueued_at = attempts, created_at, enqueued_at
        self.queue, self.last_error, self.expires_at = queue, last_error, expires_at
        self.extra = extra if extra is not None else {}
        self._payload = None if payload is _UNSET and body is None else payload
        self._body = body  # with `_payload` unset, the only copy until someone reads it

    @property
    def payload(self) -> Any:
        if self._payload is _UNSET:
            self._payload = json.loads(self._body or "null")
        return self._payload

    @property
    def body(self) -> str:
        """The payload as stored: JSON text."""
        if self._body is None:
            self._body = dumps(self._payload)
        return self._body

    @property
    def idempotency_key(self) -> str:
        """Stable across every delivery of this job: pass it to whatever the job calls."""
        return self.id

    @property
    def lock(self) -> str:
        """The wallet this delivery holds ('' when the job is not serialized)."""
        return str(self.extra.get("lock") or "")

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, attempts={self.attempts}, user_id={self.user_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, name: str) -> Any:
        """`job["payload"]` works like `job.payload`: a processor may treat a job as a dict."""
        if name not in PROCESSOR_FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in PROCESSOR_FIELDS else default

    def keys(self) -> tuple[str, ...]:
        return PROCESSOR_FIELDS

    @classmethod
    def from_json(cls, raw: str) -> Job:
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        known = {k: data.pop(k) for k in list(data) if k in _FIELDS}
        body = data.pop("body", None)
        for name in ("attempts", "created_at", "enqueued_at"):
            known[name] = int(known.get(name) or 0)
        if known.get("expires_at") is not None:
            known["expires_at"] = int(known["expires_at"])
        if isinstance(body, str):
            return cls(**known, extra=data, body=body)
        return cls(payload=data.pop("payload", None), **known, extra=data)

    def to_json(self, **changes: Any) -> str:
        data = {
            **self.extra,
            "id": self.id,
            "queue": self.queue,
            "user_id": self.user_id,
            "public_key": self.public_key,
            "body": self.body,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "enqueued_at": self.enqueued_at,
            "expires_at": self.expires_at,
        }
        if self.last_error is not None:
            data["last_error"] = self.last_error
        data.update(changes)
        return dumps({k: v for k, v in data.items() if v is not None})


PROCESSOR_FIELDS = ("id", "user_id", "public_key", "payload", "attempts", "idempotency_key")
_FIELDS = {
    "id",
    "queue",
    "user_id",
    "public_key",
    "attempts",
    "created_at",
    "enqueued_at",
    "last_error",
    "expires_at",
}


def dumps(value: Any) -> str:
    """Compact JSON, the only serialisation stored in Redis (never pickle)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def status_view(record: dict[str, Any], leased: dict[str, Any] | None) -> dict[str, Any]:
    """The body of `GET /api/agent/rebalance/{jobId}` from a status record.

    `leased` is the job as claimed, when it is in flight: then the job is `processing` and
    its attempts include the current delivery.
    """
    status = record.get("status", JobStatus.QUEUED)
    attempts = int(record.get("attempts", 0))
    updated_at = record.get("updated_at")
    if leased is not None and status not in FINAL_STATUSES:
        status = JobStatus.PROCESSING
        attempts = max(attempts, int(leased.get("attempts", attempts)))
        updated_at = max(updated_at or 0, int(leased.get("claimed_at") or 0)) or updated_at
    view: dict[str, Any] = {
        "jobId": record["id"],
        "status": str(status),
        "attempts": attempts,
        "createdAt": iso(record.get("created_at")),
        "updatedAt": iso(updated_at),
    }
    if record.get("last_error"):
        view["lastError"] = record["last_error"]
    if record.get("result") is not None:
        view["result"] = record["result"]
    return view


def status_record(
    job: Job, status: JobStatus | str, now: int, *, error: str | None = None, result: Any = None
) -> str:
    """The JSON stored at `agent:rebalance:job:<id>`; Lua's twin is `write_status`."""
    record = {
        "id": job.id,
        "user_id": job.user_id,
        "status": str(status),
        "attempts": job.attempts,
        "created_at": job.created_at,
        "updated_at": now,
    }
    if error:
        record["last_error"] = error
    if result is not None and result is not True:
        record["result"] = result
    return dumps(record)


FAILURE_TEXT_LIMIT = 8 * 1024  # a stack trace is useful; a megabyte of one is a cost


def failure_record(
    job_id: str,
    error: BaseException | str,
    context: Mapping[str, Any] | None = None,
    payload: Any = None,
    now: int | None = None,
    stack: str = "",
) -> str:
    """The JSON stored under `failed_key(job_id)`: error, stack trace, context, payload.

    Secrets are redacted from the error text and the stack, which may quote a URL. Lua's
    twin is `dead_letter` in `claim.lua`.
    """
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    else:
        message = str(error)
    record = {
        "job_id": job_id,
        "error": redact(message)[:FAILURE_TEXT_LIMIT],
        "stack": redact(stack)[-FAILURE_TEXT_LIMIT:],  # the innermost frames matter most
        "context": dict(context or {}),
        "payload": payload,
        "failed_at": now_ms() if now is None else now,
    }
    return json.dumps(record, separators=(",", ":"), default=str, ensure_ascii=False)
