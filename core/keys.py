"""Every Redis key the project writes, built in this one place.

Layout (all keys start with `agent:rebalance:` or `metrics:agent:rebalance:`):

| key | type | bound |
|---|---|---|
| `agent:rebalance:request` | list of pending jobs (JSON), FIFO: LPUSH in, RPOP out | drained |
| `agent:rebalance:request:schedule` | zset job id -> ms it must go back to the queue | drained |
| `agent:rebalance:request:leased` | hash job id -> job JSON of a claimed job | lease |
| `agent:rebalance:request:delayed` | hash job id -> job JSON waiting for its retry | retry |
| `agent:rebalance:request:dead` | list of dead jobs (JSON) | 10,000 (oldest dropped) |
| `agent:rebalance:request:busy` | hash wallet -> `<holder id>|<parked count>` | busy wallets |
| `agent:rebalance:request:parked:<sha1(wallet)>` | list of a held wallet's waiting jobs | drained |
| `agent:rebalance:request:cancelled` | set of cancelled ids still in the queue list | drained |
| `agent:rebalance:request:receipt:<token>` | a claim's tallies and leased ids | the lease |
| `agent:rebalance:request:drains` | zset drain id or `~start:<token>` -> ms it ends | drains |
| `agent:rebalance:request:awake` | string: last drain to beat, or `~wake` | heartbeat |
| `agent:rebalance:job:<jobId>` | status record (JSON) | 24 h |
| `agent:rebalance:idem:<user>:<sha256(key)>` | idempotency record (JSON) | 24 h |
| `agent:rebalance:ws:conn:<connectionId>` | a WebSocket connection: user, jobs | 2 h, 16 jobs |
| `agent:rebalance:ws:subs` | hash job id -> connection ids (space-separated) | 2 h per field, 8 |
| `agent:rebalance:ws:outbox` | list of cancels waiting to be pushed | 1,000 |
| `metrics:agent:rebalance:rate:<user>` | sliding-window log (packed timestamps) | the window |
| `metrics:agent:rebalance:read-rate:<user>` | the same, for reads (status, metrics) | the window |
| `metrics:agent:rebalance:counters:<YYYY-MM-DD>:<name>` | daily counter | 7 d |
| `metrics:agent:rebalance:failed:<jobId>` | failure record (JSON) | 7 d |
| `metrics:agent:rebalance:execution_times` | hash: log-bucket -> count, `sum_us` | ~1,300 fields |
| `metrics:agent:rebalance:execution_times:<YYYY-MM-DD>` | same, per UTC day | 7 d |
| `metrics:agent:rebalance:totals` | hash: all-time counters for Prometheus | fixed fields |

The schedule holds lease deadlines and retry times, plus the member `~queue` while the list
may hold jobs: one ZRANGE on it tells the drain whether there is any work at all.

User ids are arbitrary strings: `escape()` percent-encodes every byte outside `[A-Za-z0-9_.-]`,
so no colon, glob character, space or newline of theirs ever reaches a key.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

APP = "agent:rebalance:"
METRICS = "metrics:agent:rebalance:"

REQUEST_QUEUE = APP + "request"
QUEUE_MARKER = "~queue"  # zset member: "the list may hold jobs", so one ZRANGE sees all work

JOB_TTL_S = 24 * 3600
METRICS_TTL_S = 7 * 24 * 3600

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


_INERT = re.compile(r"[A-Za-z0-9_.-]*")


def escape(user_input: str) -> str:
    """Percent-encode `user_input` so that it is one inert key segment."""
    if _INERT.fullmatch(user_input):  # the common case (job ids, most user ids): as it is
        return user_input
    return quote(user_input, safe="_.-")


def queue_key(name: str) -> str:
    """The list key of queue `name`; a full `agent:rebalance:` key is taken as it is."""
    return name if name.startswith(APP) else APP + escape(name)


def schedule_key(queue: str) -> str:
    return queue_key(queue) + ":schedule"


def leased_key(queue: str) -> str:
    return queue_key(queue) + ":leased"


def delayed_key(queue: str) -> str:
    return queue_key(queue) + ":delayed"


def dead_key(queue: str) -> str:
    return queue_key(queue) + ":dead"


def busy_key(queue: str) -> str:
    return queue_key(queue) + ":busy"


def parked_prefix(queue: str) -> str:
    """Prefix of a wallet's parked list; Lua appends the SHA-1 of the wallet."""
    return queue_key(queue) + ":parked:"


def cancelled_key(queue: str) -> str:
    return queue_key(queue) + ":cancelled"


def receipt_key(queue: str, token: str) -> str:
    return queue_key(queue) + ":receipt:" + escape(token)


def drains_key(queue: str) -> str:
    return queue_key(queue) + ":drains"


def awake_key(queue: str) -> str:
    return queue_key(queue) + ":awake"


def is_job_id(value: str) -> bool:
    """Job ids are 32 lowercase hex digits; anything else is unknown without a lookup."""
    return bool(_JOB_ID.match(value))


def job_key(job_id: str) -> str:
    return APP + "job:" + escape(job_id)


JOB_KEY_PREFIX = APP + "job:"
FAILED_KEY_PREFIX = METRICS + "failed:"


WS_SUBS = APP + "ws:subs"
WS_OUTBOX = APP + "ws:outbox"
# API Gateway caps a WebSocket connection at 2 hours: nothing of one need outlive that.
WS_TTL_S = 2 * 3600


def ws_conn_key(connection_id: str) -> str:
    return APP + "ws:conn:" + escape(connection_id)


def idempotency_key(user_id: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{APP}idem:{escape(user_id)}:{digest}"


def rate_key(user_id: str) -> str:
    return METRICS + "rate:" + escape(user_id)


def read_rate_key(user_id: str) -> str:
    return METRICS + "read-rate:" + escape(user_id)


def day(ts_ms: int) -> str:
    """The UTC date (`YYYY-MM-DD`) of a timestamp in milliseconds."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def days_back(now_ms: int, days: int) -> list[str]:
    """The last `days` UTC dates, today first."""
    today = datetime.fromtimestamp(now_ms / 1000, UTC)
    return [(today - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days)]


def counter_key(date: str, name: str) -> str:
    return f"{METRICS}counters:{date}:{escape(name)}"


def failed_key(job_id: str) -> str:
    return FAILED_KEY_PREFIX + escape(job_id)


EXEC_TIMES = METRICS + "execution_times"


def exec_times_key(date: str | None = None) -> str:
    """All-time histogram without `date`, the UTC day's histogram with it."""
    return EXEC_TIMES if date is None else f"{EXEC_TIMES}:{date}"


TOTALS = METRICS + "totals"

# Counter names, shared by daily counters and the all-time totals hash.
SUBMITTED = "jobs"
SUCCEEDED = "succeeded"
FAILED = "failed"
RETRIED = "retried"
DEAD = "dead"
CANCELLED = "cancelled"
EXPIRED = "expired"
RATE_LIMIT_BLOCKED = "rate_limit_blocked"
RATE_LIMIT_HITS = "rate_limit_hits"  # derived (accepted + blocked), never stored
