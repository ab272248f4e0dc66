"""The sliding-window rate limiter: exact window, Retry-After, escaping, atomicity."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from core import keys
from core.rate_limit import check_rate_limit, retry_after_s
from core.redis import RestClient
from core.settings import Settings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_allows_limit_then_blocks(rest: RestClient, backend) -> None:
    """`limit` requests pass, the next is blocked with the wait until the oldest leaves."""
    results = [
        check_rate_limit(rest, "u", limit=3, window_s=60, now_ms=T0 + i * 1000) for i in range(4)
    ]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results[:3]] == [2, 1, 0]
    assert results[3].retry_after_s == 57  # oldest (T0) leaves at T0+60 s; now is T0+3 s


def test_window_slides_exactly_without_boundary_burst(rest: RestClient, backend) -> None:
    """No fixed-window burst: 10 requests at 59 s block the 11th until each one ages out."""
    late = T0 + 59_000
    assert all(check_rate_limit(rest, "u", now_ms=late).allowed for _ in range(10))
    # A fixed window would reset at T0+60 s; the sliding one still counts the 10 from 59 s.
    assert not check_rate_limit(rest, "u", now_ms=T0 + 61_000).allowed
    assert not check_rate_limit(rest, "u", now_ms=late + 59_999).allowed
    assert check_rate_limit(rest, "u", now_ms=late + 60_000).allowed


def test_blocked_requests_do_not_extend_the_window(rest: RestClient, backend) -> None:
    """Only accepted requests enter the log: hammering while blocked changes nothing."""
    for i in range(2):
        check_rate_limit(rest, "u", limit=2, window_s=10, now_ms=T0 + i)
    for i in range(20):
        assert not check_rate_limit(rest, "u", limit=2, window_s=10, now_ms=T0 + 100 + i).allowed
    assert check_rate_limit(rest, "u", limit=2, window_s=10, now_ms=T0 + 10_000).allowed


def test_log_is_one_bounded_string_living_one_window(rest: RestClient, backend) -> None:
    """The log is a single string of at most `limit` timestamps, expiring with the window."""
    for i in range(25):
        check_rate_limit(rest, "u", limit=5, window_s=30, now_ms=T0 + i)
    raw = backend.get(keys.rate_key("u"))
    assert raw.split(",") == [str(T0 + i) for i in range(5)]
    assert 29_000 < backend.pttl(keys.rate_key("u")) <= 30_000


def test_blocked_requests_are_counted(rest: RestClient, backend) -> None:
    """Each blocked check increments the day's `rate_limit_blocked` counter and the total."""
    for i in range(5):
        check_rate_limit(rest, "u", limit=2, now_ms=T0 + i)
    day_key = keys.counter_key(keys.day(T0), keys.RATE_LIMIT_BLOCKED)
    assert backend.get(day_key) == "3"
    assert backend.ttl(day_key) > 6 * 24 * 3600
    assert backend.hget(keys.TOTALS, keys.RATE_LIMIT_BLOCKED) == "3"


@pytest.mark.parametrize("user_id", ["a:b", "*", "x\ny", "ü" * 1000, "metrics:agent:rebalance:x"])
def test_user_ids_never_reach_a_key_unescaped(rest: RestClient, backend, user_id: str) -> None:
    """Arbitrary user ids work, and each one's key is its own escaped segment."""
    assert check_rate_limit(rest, user_id, now_ms=T0).allowed
    assert check_rate_limit(rest, "other", now_ms=T0).allowed
    rate_keys = backend.keys(keys.METRICS + "rate:*")
    assert sorted(rate_keys) == sorted([keys.rate_key(user_id), keys.rate_key("other")])
    assert all("\n" not in k and "*" not in k for k in rate_keys)


def test_users_are_independent(rest: RestClient, backend) -> None:
    """One user's exhausted window does not touch another's."""
    for _ in range(11):
        check_rate_limit(rest, "heavy", now_ms=T0)
    assert check_rate_limit(rest, "light", now_ms=T0).allowed


def test_atomic_under_concurrency(settings: Settings, backend) -> None:
    """50 concurrent checks of one user with the default limit: exactly 10 allowed."""
    client = RestClient(
        settings.upstash_redis_rest_url, settings.upstash_redis_rest_token, timeout_s=30
    )  # one client, shared by the threads like a warm Lambda's
    try:
        check_rate_limit(client, "warm-up", now_ms=T0)  # the script is loaded once
        with ThreadPoolExecutor(max_workers=50) as pool:
            allowed = list(
                pool.map(lambda _: check_rate_limit(client, "busy", now_ms=T0).allowed, range(50))
            )
    finally:
        client.close()
    assert allowed.count(True) == 10


@pytest.mark.parametrize(
    ("wait_ms", "seconds"), [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (59_999, 60)]
)
def test_retry_after_is_whole_seconds_rounded_up(wait_ms: int, seconds: int) -> None:
    """Retry-After rounds up and is never 0."""
    assert retry_after_s(wait_ms) == seconds


def test_retry_after_never_exceeds_the_window_when_clocks_disagree(
    rest: RestClient, backend
) -> None:
    """Ten callers whose clocks ran 10..19 ms ahead fill the window; a caller at `now` is
    told to wait at most the window (60 s), not 61 s."""
    for skew in range(10, 20):
        assert check_rate_limit(rest, "skewed", now_ms=T0 + skew).allowed
    blocked = check_rate_limit(rest, "skewed", now_ms=T0)
    assert not blocked.allowed
    assert blocked.retry_after_s == 60
