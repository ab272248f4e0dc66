"""The scheduled drain Lambda (EventBridge, every minute): `handler(event, context)`.

Settings, the Redis client and the processor are built once per cold start; a bad
`REBALANCE_PROCESSOR` fails the first invocation with a `ConfigError` naming it, before any
job is claimed. The invocation runs until the Lambda's remaining time, less
`DRAIN_SAFETY_MARGIN_MS`, and returns the drain summary. With `WS_API_ENDPOINT` set, it
pushes the status changes that WebSocket subscribers wait for (`core.push`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from core.drain import DrainOptions, drain
from core.log import bind, configure
from core.processors import Processor, load_processor
from core.queue import QueuePolicy
from core.redis import get_client
from core.settings import get_settings

if TYPE_CHECKING:
    from core.push import Pusher


@lru_cache(maxsize=1)
def _processor(spec: str) -> Processor:
    return load_processor(spec)


@lru_cache(maxsize=1)
def _pusher(endpoint: str) -> Pusher | None:
    """The WebSocket pusher of the container (its boto3 client stays warm), if configured."""
    if not endpoint:
        return None
    from core import subscriptions
    from core.push import Pusher, management_poster

    def forget(connection_id: str, job_id: str) -> None:
        subscriptions.forget(get_client(), connection_id, [job_id])

    return Pusher(management_poster(endpoint), forget)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    configure(settings.log_level)
    processor = _processor(settings.rebalance_processor)
    with bind(request_id=getattr(context, "aws_request_id", None), source="drain"):
        summary = drain(
            get_client(),
            processor,
            context.get_remaining_time_in_millis,
            policy=QueuePolicy.from_settings(settings),
            options=DrainOptions.from_settings(settings),
            pusher=_pusher(settings.ws_api_endpoint),
        )
    return summary.as_dict()
