"""WebSocket subscriptions: who follows which job, kept in Redis for the drain to find.

Keys (see `core.keys`): `agent:rebalance:ws:conn:<connectionId>` (the connection's user and
the jobs it follows, 2 h: API Gateway's longest connection) and the hash
`agent:rebalance:ws:subs` (job id -> its subscribers' connection ids, each field with its own
2 h TTL, the newest `MAX_SUBSCRIBERS_PER_JOB` kept). The scripts that change a status read
that hash with one HMGET per batch (`core/lua/_notify.lua`); `core.push` posts the changes.

- `connect`: the connection of an authenticated user opens (it counts as one read against
  the user's read limit, so a client cannot open connections without bound);
- `subscribe`: the connection follows one of its user's jobs, at most
  `MAX_JOBS_PER_CONNECTION`; answers the job's status, read in the same script, so no change
  falls between the answer and the pushes;
- `forget`: the connection closed, or a post found it gone.

The same functions serve API Gateway's `ws` function in production and `make dev`'s route.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from core import keys
from core.auth import Principal
from core.errors import AuthError, ConflictError, NotFoundError, RateLimitedError, UpstashError
from core.jobs import dumps, status_view
from core.jobs import now_ms as clock_ms
from core.rate_limit import ReadLimit, retry_after_s
from core.redis import RedisClient, Script

MAX_SUBSCRIBERS_PER_JOB = 8
MAX_JOBS_PER_CONNECTION = 16
# API Gateway's connection ids are base64-like (`L0SM9cOFvHcCIhw=`); the dev server's are hex.
_CONNECTION_ID = re.compile(r"^[A-Za-z0-9_=+/-]{1,128}$")

_CONNECT = Script("ws_connect.lua", prelude=["_rate_limit.lua"])
_SUBSCRIBE = Script("ws_subscribe.lua", prelude=["_ws.lua"])
_FORGET = Script("ws_forget.lua", prelude=["_ws.lua"])


def check_connection_id(connection_id: str) -> str:
    """The id, if it is one API Gateway could have made (it reaches keys, escaped)."""
    if not _CONNECTION_ID.match(connection_id):
        raise AuthError("not a WebSocket connection id")
    return connection_id


def connect(
    client: RedisClient,
    principal: Principal,
    connection_id: str,
    limit: ReadLimit,
    *,
    now: int | None = None,
) -> None:
    """Record that `connection_id` belongs to `principal` (one round trip);
    `RateLimitedError` past the user's read limit."""
    check_connection_id(connection_id)
    now = clock_ms() if now is None else now
    reply = _CONNECT(
        client,
        [keys.ws_conn_key(connection_id), keys.read_rate_key(principal.user_id)],
        [
            now,
            limit.window_s * 1000,
            limit.limit,
            dumps({"u": principal.user_id, "j": []}),
            keys.WS_TTL_S,
        ],
    )
    if not isinstance(reply, list) or not reply:
        raise UpstashError("unexpected reply from the connect script")
    if int(reply[0]) == 0:
        raise RateLimitedError(retry_after_s(int(reply[1])))


def subscribe(client: RedisClient, connection_id: str, job_id: str) -> dict[str, Any]:
    """Follow `job_id` on `connection_id`; returns its status view (one round trip).

    `NotFoundError` for unknown ids and other users' jobs alike, `AuthError` for a connection
    that never connected (or outlived 2 h), `ConflictError` past `MAX_JOBS_PER_CONNECTION`.
    """
    check_connection_id(connection_id)
    if not keys.is_job_id(job_id):
        raise NotFoundError("no such job")
    reply = _SUBSCRIBE(
        client,
        [
            keys.ws_conn_key(connection_id),
            keys.job_key(job_id),
            keys.WS_SUBS,
            keys.leased_key(keys.REQUEST_QUEUE),
            keys.schedule_key(keys.REQUEST_QUEUE),
        ],
        [connection_id, job_id, keys.WS_TTL_S, MAX_SUBSCRIBERS_PER_JOB, MAX_JOBS_PER_CONNECTION],
    )
    outcome = str(reply[0]) if isinstance(reply, list) and reply else ""
    if outcome == "gone":
        raise AuthError("this connection is not authenticated: reconnect with a token")
    if outcome == "missing":
        raise NotFoundError("no such job")
    if outcome == "full":
        raise ConflictError(f"a connection follows at most {MAX_JOBS_PER_CONNECTION} jobs")
    if outcome != "ok":
        raise UpstashError("unexpected reply from the subscribe script")
    return _view(reply[1], reply[2], reply[3])


def _view(raw_record: str, raw_leased: Any, lease_ends: Any) -> dict[str, Any]:
    from core.submit import public_view  # the status route's redaction, loaded when used

    leased = json.loads(raw_leased) if isinstance(raw_leased, str) else None
    if leased is not None and (lease_ends is None or float(lease_ends) < clock_ms()):
        leased = None  # its consumer is gone: the record says where it stands
    return public_view(status_view(json.loads(raw_record), leased))


def forget(client: RedisClient, connection_id: str, job_ids: Sequence[str] = ()) -> int:
    """Drop the connection and its subscriptions (and those of `job_ids`); returns how many
    subscriptions went. One round trip; forgetting twice is harmless."""
    check_connection_id(connection_id)
    jobs = [j for j in job_ids if keys.is_job_id(j)]
    reply = _FORGET(
        client,
        [keys.ws_conn_key(connection_id), keys.WS_SUBS],
        [connection_id, keys.WS_TTL_S, *jobs],
    )
    return int(reply or 0)
