"""Per-user sliding-window rate limiting, exact and atomic (one Lua script per check).

Keys (built in `core.keys`):

- `metrics:agent:rebalance:rate:<escaped user>` — string: the accepted requests' timestamps
  (ms) inside the window, comma-separated, at most `limit` of them; `PX` = the window.
- blocked requests count into `metrics:agent:rebalance:counters:<day>:rate_limit_blocked`
  and the totals hash. Hits are not stored: hits = accepted submits + blocked, derived by
  the metrics reader, which keeps a submit within its command budget.

Reads (status reads, each round trip of a long poll, the metrics summary) have their own
limit per user, `READ_RATE_LIMIT_MAX` per `READ_RATE_LIMIT_WINDOW_S` (default 120 per 60 s),
with its own log at `metrics:agent:rebalance:read-rate:<escaped user>`. `limited_read` runs
the check and the read in one script (`core/lua/limited_read.lua`), so a read keeps its one
round trip and a refused read costs two commands instead of the read's own.

The window logic lives in `core/lua/_rate_limit.lua`, shared with the submit script so that
`POST /api/agent/rebalance` rate-limits inside its single round trip; `check_rate_limit` is
the standalone operation of the original system.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core import keys
from core.errors import RateLimitedError, UpstashError
from core.jobs import now_ms as clock_ms
from core.redis import Command, RedisClient, Script
from core.settings import Settings

_CHECK = Script("rate_limit.lua", prelude=["_metrics.lua", "_rate_limit.lua"])
_LIMITED_READ = Script("limited_read.lua", prelude=["_rate_limit.lua"])
# What a limited read may run: single-key reads, and MGET (every argument a key).
_SINGLE_KEY_READS = frozenset(
    {"GET", "HGET", "HGETALL", "HLEN", "LLEN", "LINDEX", "ZSCORE", "ZCARD", "ZRANGE"}
)


@dataclass(frozen=True)
class RateLimit:
    """The outcome of one check: allowed or not, slots left, seconds until one frees."""

    allowed: bool
    remaining: int
    retry_after_s: int


def retry_after_s(wait_ms: int) -> int:
    """Whole seconds a blocked caller waits: rounded up, at least 1 (`Retry-After`)."""
    return max(1, math.ceil(int(wait_ms) / 1000))


def check_rate_limit(
    client: RedisClient,
    user_id: str,
    limit: int = 10,
    window_s: int = 60,
    now_ms: int | None = None,
) -> RateLimit:
    """Record one request of `user_id` if the window has room; count it as blocked if not."""
    now = clock_ms() if now_ms is None else now_ms
    allowed, value = _CHECK(
        client,
        [
            keys.rate_key(user_id),
            keys.counter_key(keys.day(now), keys.RATE_LIMIT_BLOCKED),
            keys.TOTALS,
        ],
        [now, window_s * 1000, limit, keys.METRICS_TTL_S, keys.RATE_LIMIT_BLOCKED],
    )
    if int(allowed):
        return RateLimit(allowed=True, remaining=int(value), retry_after_s=0)
    return RateLimit(allowed=False, remaining=0, retry_after_s=retry_after_s(value))


@dataclass(frozen=True)
class ReadLimit:
    """A user's read allowance: at most `limit` reads per `window_s` seconds."""

    user_id: str
    limit: int
    window_s: int

    @classmethod
    def for_user(cls, settings: Settings, user_id: str) -> ReadLimit:
        return cls(user_id, settings.read_rate_limit_max, settings.read_rate_limit_window_s)


def limited_read(
    client: RedisClient,
    limit: ReadLimit | None,
    commands: Sequence[Command],
    now_ms: int | None = None,
) -> list[Any]:
    """The replies of the read-only `commands`, counted against `limit`, in one round trip.

    `RateLimitedError` (nothing read) past the limit; without a limit, a plain pipeline.
    """
    if limit is None:
        return client.pipeline(commands)
    script_keys, specs = [keys.read_rate_key(limit.user_id)], []
    for command in commands:
        name = str(command[0]).upper()
        if name != "MGET" and name not in _SINGLE_KEY_READS:
            raise ValueError(f"{name} is not a read a limited read may run")
        count = len(command) - 1 if name == "MGET" else 1
        script_keys += [str(k) for k in command[1 : 1 + count]]
        specs.append([name, count, *command[1 + count :]])
    now = clock_ms() if now_ms is None else now_ms
    reply = _LIMITED_READ(
        client,
        script_keys,
        [now, limit.window_s * 1000, limit.limit, json.dumps(specs, separators=(",", ":"))],
    )
    if not isinstance(reply, list) or not reply or int(reply[0]) not in (0, 1):
        raise UpstashError("unexpected reply from the limited read script")
    if int(reply[0]) == 0:
        raise RateLimitedError(retry_after_s(int(reply[1])))
    return list(reply[1:]) + [None] * (len(commands) - len(reply) + 1)
