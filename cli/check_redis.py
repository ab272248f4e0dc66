"""`rebalance check redis`: can this environment reach its Redis, over REST and over TCP?

Checks, in order (each one a `PASS`/`FAIL` line):

- `rest ping`, `rest set`, `rest get`, `rest del`: the Upstash REST endpoint named by
  `UPSTASH_REDIS_REST_URL`/`_TOKEN`, through the project's own client (timeouts included);
- `queue push`, `queue pop`: a list round trip, the way the job queue uses Redis;
- with `REDIS_URL` set: `tcp set`, `tcp get`, `tcp del`, `tcp pubsub` over redis-py.

Every key is a scratch key under `agent:rebalance:check:<random>` with a 60 s TTL, deleted
at the end, so a check never touches real data and never leaves anything behind.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from core import keys
from core.redis import RestClient, make_client, make_tcp_client
from core.settings import Settings

Result = tuple[str, bool, str]
SCRATCH_TTL_S = 60


class CheckFailed(Exception):
    """The command ran but answered something other than expected."""


def run_checks(settings: Settings) -> list[Result]:
    """Run every applicable check; never raises."""
    scratch = f"{keys.APP}check:{secrets.token_hex(8)}"
    value = f"check-{secrets.token_hex(4)}-✓"  # a non-ASCII value proves the encoding too
    results: list[Result] = []
    try:
        rest = make_client(settings)
    except Exception as exc:
        return [("rest client", False, _reason(exc))]
    try:
        results += _rest_checks(rest, scratch, value)
        results += _queue_checks(rest, scratch + ":queue", value)
    finally:
        rest.close()
    if settings.redis_url:
        results += _tcp_checks(settings, scratch + ":tcp", value)
    return results


def _rest_checks(rest: RestClient, key: str, value: str) -> list[Result]:
    return [
        _check("rest ping", lambda: _expect(rest.execute(["PING"]), "PONG")),
        # The SDK turns SET's "OK" into True.
        _check(
            "rest set",
            lambda: _expect(
                rest.execute(["SET", key, value, "EX", SCRATCH_TTL_S]) in (True, "OK"), True
            ),
        ),
        _check("rest get", lambda: _expect(rest.execute(["GET", key]), value)),
        _check("rest del", lambda: _expect(rest.execute(["DEL", key]), 1)),
    ]


def _queue_checks(rest: RestClient, key: str, value: str) -> list[Result]:
    try:
        return [
            _check(
                "queue push",
                lambda: _expect(
                    rest.pipeline([["LPUSH", key, value], ["EXPIRE", key, SCRATCH_TTL_S]]), [1, 1]
                ),
            ),
            _check("queue pop", lambda: _expect(rest.execute(["RPOP", key]), value)),
        ]
    finally:
        _quietly(lambda: rest.execute(["DEL", key]))


def _tcp_checks(settings: Settings, key: str, value: str) -> list[Result]:
    try:
        tcp = make_tcp_client(settings)
    except Exception as exc:
        return [("tcp client", False, _reason(exc))]
    assert tcp is not None  # REDIS_URL is set
    try:
        return [
            _check(
                "tcp set",
                lambda: _expect(tcp.execute(["SET", key, value, "EX", SCRATCH_TTL_S]), True),
            ),
            _check("tcp get", lambda: _expect(tcp.execute(["GET", key]), value)),
            _check("tcp del", lambda: _expect(tcp.execute(["DEL", key]), 1)),
            _check(
                "tcp pubsub",
                lambda: _pubsub_round_trip(tcp.raw, key, value, settings.upstash_timeout_s),
            ),
        ]
    finally:
        _quietly(lambda: tcp.execute(["DEL", key]))
        tcp.close()


def _pubsub_round_trip(client: Any, channel: str, message: str, timeout_s: float) -> None:
    """Subscribe, publish once, and wait for that very message to come back."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(channel)
        pubsub.get_message(timeout=timeout_s)  # consume the subscribe confirmation
        receivers = client.publish(channel, message)
        if receivers < 1:
            raise CheckFailed(f"PUBLISH reached {receivers} subscribers")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            received = pubsub.get_message(timeout=deadline - time.monotonic())
            if received and received.get("type") == "message":
                _expect(received.get("data"), message)
                return
        raise CheckFailed(f"no message within {timeout_s:g} s")
    finally:
        pubsub.close()


def _check(name: str, probe: Callable[[], None]) -> Result:
    try:
        probe()
    except Exception as exc:  # a smoke check reports every failure, whatever its kind
        return (name, False, _reason(exc))
    return (name, True, "")


def _expect(actual: Any, expected: Any) -> None:
    if actual != expected:
        raise CheckFailed(f"expected {expected!r}, got {actual!r}")


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _quietly(action: Callable[[], Any]) -> None:
    # Cleanup of a scratch key that has a TTL anyway: a failure here changes nothing.
    with contextlib.suppress(Exception):
        action()
