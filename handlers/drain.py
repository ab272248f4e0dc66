"""The scheduled drain Lambda (EventBridge, every minute): `handler(event, context)`.

Settings, the Redis client and the processor are built once per cold start; a bad
`REBALANCE_PROCESSOR` fails the first invocation with a `ConfigError` naming it, before any
job is claimed. The invocation runs until the Lambda's remaining time, less
`DRAIN_SAFETY_MARGIN_MS`, and returns the drain summary, after logging it once more as
CloudWatch metrics in embedded metric format (`core.emf`). With `WS_API_ENDPOINT` set, it
pushes the status changes that WebSocket subscribers wait for (`core.push`).

Two kinds of event start it: EventBridge's schedule (`source: aws.events`) and, with the
elastic drain, a wake (`{"wake": "submit" | "fanout" | "handover", "token"}`, sent by a
submit or another drain; see `core.elastic`). With `DRAIN_WAKE`, a scheduled run that finds
nothing due returns after one command.

`run_drain(settings, remaining_ms)` is that invocation without Lambda: `handler` calls it with
the cold start's settings and the context's clock; `rebalance drain` and the dev ticker call it
with settings of their own (`dataclasses.replace`), never through the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from core import elastic
from core.drain import DrainOptions, drain
from core.emf import drain_metrics
from core.log import bind, configure, get_logger
from core.log import event as log_event
from core.processors import Processor, load_processor
from core.queue import QueuePolicy
from core.redis import RedisClient, client_for
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from core.push import Pusher

log = get_logger("handlers.drain")
DEFAULT_FUNCTION_NAME = "agent-rebalance-drain"  # the metrics' dimension outside Lambda


@lru_cache(maxsize=1)
def _processor(spec: str) -> Processor:
    return load_processor(spec)


@lru_cache(maxsize=1)
def _pusher(endpoint: str, client: RedisClient) -> Pusher | None:
    """The WebSocket pusher of the container (its boto3 client stays warm), if configured;
    connections that are gone are forgotten in the drain's own Redis."""
    if not endpoint:
        return None
    from core import subscriptions
    from core.push import Pusher, management_poster

    def forget(connection_id: str, job_id: str) -> None:
        subscriptions.forget(client, connection_id, [job_id])

    return Pusher(management_poster(endpoint), forget)


def _backlog(client: Any) -> dict[str, int]:
    """What a busy drain leaves behind, for the CloudWatch metrics and their age alarm: one
    round trip, only after a drain that did work (an idle one reads nothing more)."""
    from core.errors import UpstashError
    from core.metrics import get_queue_gauges

    try:
        gauges = get_queue_gauges(client)
    except UpstashError:
        return {}
    return {
        "queueDepth": gauges.queue_depth,
        "oldestAgeMs": int(gauges.oldest_queued_age_s * 1000),
    }


def run_drain(
    settings: Settings,
    remaining_ms: Callable[[], int],
    *,
    event: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    function_name: str = DEFAULT_FUNCTION_NAME,
    client: RedisClient | None = None,
) -> dict[str, Any]:
    """One drain invocation with `settings`, until `remaining_ms()` (less the safety margin)
    runs out; `event` says who started it (a scheduled run when None), `client` defaults to
    the process's client for the connection of `settings`. Returns the summary.

    The processor (`settings.rebalance_processor`) reads its own configuration (the webhook's
    URL and secret) from the environment's settings, as it does on Lambda."""
    configure(settings.log_level)
    processor = _processor(settings.rebalance_processor)
    client = client_for(settings) if client is None else client
    crew = elastic.crew_for(event, client, settings)
    role, _ = elastic.role_of(event)
    options = replace(
        DrainOptions.from_settings(settings), idle_exit_ms=elastic.idle_exit_ms(settings, role)
    )
    with bind(request_id=request_id, source="drain", role=role):
        summary = drain(
            client,
            processor,
            remaining_ms,
            policy=QueuePolicy.from_settings(settings),
            options=options,
            crew=crew,
            pusher=_pusher(settings.ws_api_endpoint, client),
        )
        result = summary.as_dict()
        if summary.claimed:
            result.update(_backlog(client))
        log_event(log, "drain.metrics", **drain_metrics(result, function_name))
    return result


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return run_drain(
        get_settings(),
        context.get_remaining_time_in_millis,
        event=event,
        request_id=getattr(context, "aws_request_id", None),
        function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", DEFAULT_FUNCTION_NAME),
    )
