"""Per-user sliding-window rate limiting, exact and atomic (one Lua script per check).

Keys (built in `core.keys`):

- `metrics:agent:rebalance:rate:<escaped user>` — string: the accepted requests' timestamps
  (ms) inside the window, comma-separated, at most `limit` of them; `PX` = the window.
- blocked requests count into `metrics:agent:rebalance:counters:<day>:rate_limit_blocked`
  and the totals hash. Hits are not stored: hits = accepted submits + blocked, derived by
  the metrics reader, which keeps a submit within its command budget.

The window logic lives in `core/lua/_rate_limit.lua`, shared with the submit script so that
`POST /api/agent/rebalance` rate-limits inside its single round trip; `check_rate_limit` is
the standalone operation of the original system.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core import keys
from core.jobs import now_ms as clock_ms
from core.redis import RedisClient, Script

_CHECK = Script("rate_limit.lua", prelude=["_metrics.lua", "_rate_limit.lua"])


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
