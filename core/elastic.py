"""The elastic drain: running drains known by heartbeats, woken on submit, fanned out on backlog.

Keys (see `core.keys`):

- `<queue>:drains`, a zset: drain id -> the ms its heartbeat ends; also `~start:<token>` ->
  the ms a drain being started (fan-out) has to join by, so that a start in flight counts as
  a running drain and concurrent drains never start a crowd. Expired entries (dead drains,
  starts that never came) are purged whenever a drain joins or leaves: the zset holds the live
  drains, the starts in flight and, until the next join, the entries of drains that died.
- `<queue>:awake`, a string with a TTL: the id of the last drain to beat (`DRAIN_HEARTBEAT_MS`),
  or `~wake` while a woken drain is on its way (`DRAIN_WAKE_LOCK_MS`). The submit script asks
  it with ONE `SET … NX PX`: a submit that creates it is the one that wakes a drain.

A drain's life (`Crew`): it joins (one script: purge, admission under `DRAIN_MAX_PARALLEL`,
its heartbeat, the backlog; starts as many drains as the backlog calls for: one per
`DRAIN_FANOUT_BACKLOG` queued jobs); a thread beats every third of `DRAIN_HEARTBEAT_MS` (one
script, which fans out again when the backlog grew); it leaves with one script that answers
whether work is due, so work that arrived while it was leaving is never left unseen: it joins
again and takes it. A drain killed at any line stops beating, and its entries expire.

Idle polls stay ONE billed command (`core.queue.has_due_work`): the heartbeat rides on its
own timer, not on the polls, and a woken drain returns after `DRAIN_IDLE_EXIT_MS` (2 s when
unset). With `DRAIN_WAKE`, the scheduled drain is only the safety net: it returns after one
`ZRANGE` when nothing is due.

Wakes go through a `Waker`: an asynchronous Lambda invoke (`InvocationType=Event`, boto3
imported by the first wake only, never at a cold import), or whatever `use_waker` installs
(`make dev`'s ticker starts a drain thread).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core import keys
from core.errors import UpstashError
from core.jobs import now_ms
from core.log import event, get_logger
from core.queue import has_due_work
from core.redis import RedisClient, Script
from core.settings import Settings, options_from, setting

log = get_logger(__name__)

HEARTBEAT = Script("heartbeat.lua")
LEAVE = Script("leave.lua")

SCHEDULED, WOKEN = "scheduled", "woken"
IDLE_EXIT_MS = 2000  # a woken drain's idle time before it returns, when DRAIN_IDLE_EXIT_MS is unset
DUE_HORIZON_MS = 1000  # leaving drains count work due this soon: clocks of Lambdas differ a bit

Waker = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class ElasticOptions:
    wake: bool = setting("drain_wake")
    max_parallel: int = setting("drain_max_parallel")
    fanout_backlog: int = setting("drain_fanout_backlog")
    heartbeat_ms: int = setting("drain_heartbeat_ms")
    wake_lock_ms: int = setting("drain_wake_lock_ms")
    function_name: str = setting("drain_function_name")

    @property
    def enabled(self) -> bool:
        """Heartbeats are kept only when something reads them: wakes or fan-out."""
        return self.wake or self.max_parallel > 1

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticOptions:
        return options_from(cls, settings)


def wake_event(reason: str, token: str = "") -> dict[str, str]:
    """The payload of a wake: `submit`, `fanout` (with the token of its start) or `handover`."""
    return {"wake": reason, "token": token}


def role_of(drain_event: Any) -> tuple[str, str]:
    """(role, start token) of a drain invocation: our wake payload, or else a scheduled run
    (EventBridge's `source: aws.events`, the CLI, `sls invoke local`)."""
    if isinstance(drain_event, Mapping) and isinstance(drain_event.get("wake"), str):
        token = drain_event.get("token")
        return WOKEN, token if isinstance(token, str) else ""
    return SCHEDULED, ""


def idle_exit_ms(settings: Settings, role: str) -> int | None:
    """When a drain returns once idle: `DRAIN_IDLE_EXIT_MS`, else 2 s for an elastic drain
    (woken, or scheduled with `DRAIN_WAKE`); None (poll until the budget ends) otherwise."""
    if settings.drain_idle_exit_ms is not None:
        return settings.drain_idle_exit_ms
    return IDLE_EXIT_MS if role == WOKEN or settings.drain_wake else None


# -- waking a drain -------------------------------------------------------------------------

_local_waker: Waker | None = None


def use_waker(waker: Waker | None) -> None:
    """Wake drains with `waker` instead of a Lambda invoke (`make dev`, tests); None resets."""
    global _local_waker
    _local_waker = waker


def wake(options: ElasticOptions, payload: dict[str, Any]) -> bool:
    """Start one drain; True when the start was accepted. Never raises: a wake that fails
    leaves the job to the running drains' next beat or to the schedule."""
    try:
        if _local_waker is not None:
            return _local_waker(payload)
        return invoke_drain(options.function_name, payload)
    except Exception as exc:  # boto3's errors are not ours to enumerate; the 202 stands
        event(log, "drain.wake_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        return False


@lru_cache(maxsize=1)
def lambda_client() -> Any:
    """The Lambda client of the process, made by the first wake: importing boto3 costs about
    0.3 s, which only a waking request pays, never a cold start."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 2})
    return boto3.client("lambda", config=config)


def invoke_drain(function_name: str, payload: dict[str, Any]) -> bool:
    """An asynchronous invoke of the drain function (202: queued by Lambda)."""
    if not function_name:
        event(log, "drain.wake_skipped", logging.WARNING, reason="DRAIN_FUNCTION_NAME is unset")
        return False
    reply = lambda_client().invoke(
        FunctionName=function_name,
        InvocationType="Event",
        Payload=json.dumps(payload).encode(),
    )
    return int(reply.get("StatusCode", 0)) == 202


# -- one drain among the running drains ---------------------------------------------------


class Crew:
    """A drain's membership of the running drains: join, beat, fan out, leave."""

    def __init__(
        self,
        client: RedisClient,
        options: ElasticOptions,
        role: str = WOKEN,
        token: str = "",
        *,
        queue: str = keys.REQUEST_QUEUE,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.client, self.options, self.role, self.queue = client, options, role, queue
        self.token, self.clock = token, clock
        self.drain_id = uuid.uuid4().hex
        self.started = 0  # drains this one started (fan-out, hand-over)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def join(self) -> str | None:
        """Join the running drains; None when admitted, else why this drain returns at once:
        `nothing_due` (scheduled with DRAIN_WAKE: one ZRANGE found nothing) or `crowded`."""
        if self.role == SCHEDULED and self.options.wake and not self._due():
            return "nothing_due"
        try:
            admitted = self._beat(joining=True)
        except UpstashError as exc:  # drain anyway: the claims ride through faults, the
            event(log, "drain.join_failed", logging.WARNING, error=str(exc))  # beats retry
            admitted = True
        if not admitted:
            return "crowded"
        self._stop.clear()
        self._thread = threading.Thread(target=self._beating, name="drain-heartbeat", daemon=True)
        self._thread.start()
        return None

    def leave(self, reason: str) -> bool:
        """Leave the running drains. True when work came due meanwhile and this drain joined
        again to take it; at its deadline it hands that work to a new drain instead."""
        self.close()
        try:
            due = int(LEAVE(self.client, self._keys(keys.schedule_key(self.queue)),
                            [self.clock(), self.drain_id, DUE_HORIZON_MS]))  # fmt: skip
        except UpstashError as exc:
            event(log, "drain.leave_failed", logging.WARNING, error=str(exc))
            return False  # its entries expire by themselves; the schedule sees the work
        if not due:
            return False
        if reason == "deadline":
            self.started += wake(self.options, wake_event("handover"))
            return False
        self.role, self.token = WOKEN, ""
        return self.join() is None

    def close(self) -> None:
        """Stop beating (the heartbeat then expires unless `leave` removes it first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _due(self) -> bool:
        try:
            return has_due_work(self.client, self.queue)
        except UpstashError:
            return True  # cannot tell: drain, and the claim finds out

    def _beating(self) -> None:
        interval_s = self.options.heartbeat_ms / 3000
        while not self._stop.wait(interval_s):
            try:
                self._beat(joining=False)
            except UpstashError as exc:  # a missed beat: the next one may land
                event(log, "drain.heartbeat_failed", logging.WARNING, error=str(exc))

    def _beat(self, *, joining: bool) -> bool:
        """One heartbeat script call; starts the drains it reserved. False: not admitted."""
        opts = self.options
        tokens = [uuid.uuid4().hex for _ in range(opts.max_parallel)]
        reply = HEARTBEAT(
            self.client,
            self._keys(keys.queue_key(self.queue)),
            [
                self.clock(),
                self.drain_id,
                opts.heartbeat_ms,
                opts.max_parallel,
                opts.fanout_backlog,
                opts.wake_lock_ms,
                "1" if joining else "0",
                self.token if joining else "",
                *tokens,
            ],
        )
        admitted, running, backlog, *starts = reply
        for token in starts:
            self.started += wake(opts, wake_event("fanout", str(token)))
        if starts:
            event(log, "drain.fanout", logging.INFO, running=int(running), backlog=int(backlog),
                  starting=len(starts))  # fmt: skip
        return bool(int(admitted))

    def _keys(self, third: str) -> list[str]:
        return [keys.drains_key(self.queue), keys.awake_key(self.queue), third]


def crew_for(drain_event: Any, client: RedisClient, settings: Settings) -> Crew | None:
    """The crew of a drain invocation, or None when no elastic feature is on."""
    options = ElasticOptions.from_settings(settings)
    if not options.enabled:
        return None
    role, token = role_of(drain_event)
    return Crew(client, options, role, token)


def running_drains(client: RedisClient, queue: str = keys.REQUEST_QUEUE) -> int:
    """How many drains beat now (starts in flight included): operators' and tests' view."""
    return int(client.execute(["ZCOUNT", keys.drains_key(queue), now_ms(), "+inf"]))
