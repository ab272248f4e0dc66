"""The webhook processor: POST the job to `REBALANCE_WEBHOOK_URL`, signed.

Request: JSON `{"jobId", "userId", "publicKey", "payload", "attempt"}` with headers
`X-Rebalance-Timestamp: <unix seconds>`, `X-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>" keyed with REBALANCE_WEBHOOK_SECRET>` (the receiver recomputes it and
rejects stale timestamps to stop replays) and `Idempotency-Key` (the job's idempotency key,
else its id: stable across deliveries, which are at least once). Answers: 2xx done (a JSON
object body becomes the job's `result`); 408, 425, 429 and 5xx retried; any other 4xx is
permanent (dead-lettered now); a timeout (`REBALANCE_WEBHOOK_TIMEOUT_MS`, keep it inside
`JOB_LEASE_SECONDS`) or a network error is retried.

Connections: one `httpx.AsyncClient` per event loop, that is per drain invocation (the drain
runs each invocation in its own `asyncio.run`) or per polling worker (one `asyncio.Runner`
for its life). Every job of the invocation reuses its
keep-alive connections, so a batch pays one TLS handshake per connection, not one per job.
The client is made by the first job and closed when its loop ends: it is held by an async
generator that the loop finalizes on shutdown (`asyncio.run` and `asyncio.Runner` do), so
no socket outlives the invocation. It is not kept across warm invocations on purpose: an
async client's connections belong to the loop that opened them, and the next invocation runs
on a new one (a sync client would survive, but its calls could not be cancelled at the
drain's deadline, and connections frozen between invocations go stale behind NATs).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

from core.errors import ConfigError, PermanentJobError
from core.jobs import Job
from core.settings import Settings, get_settings

RETRYABLE_4XX = frozenset({408, 425, 429})


class WebhookRetryableError(RuntimeError):
    """The endpoint failed in a way that may pass later (5xx, 408, 425, 429, timeout)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def build_request(job: Job, secret: str, now_s: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "jobId": job.id,
            "userId": job.user_id,
            "publicKey": job.public_key,
            "payload": job.payload,
            "attempt": job.attempts,
        },
        separators=(",", ":"),
    ).encode()
    timestamp = str(int(time.time()) if now_s is None else now_s)
    headers = {
        "Content-Type": "application/json",
        "X-Rebalance-Timestamp": timestamp,
        "X-Signature": sign(secret, timestamp, body),
        # Stable across deliveries: the job's idempotency key where the job has one, else its id.
        "Idempotency-Key": getattr(job, "idempotency_key", None) or job.id,
    }
    return body, headers


def check_config(settings: Settings) -> None:
    """Called when the processor is loaded: a missing URL or secret stops the start."""
    problems = {}
    if not settings.rebalance_webhook_url.startswith(("http://", "https://")):
        problems["REBALANCE_WEBHOOK_URL"] = "the webhook processor needs an http(s) URL"
    if not settings.rebalance_webhook_secret:
        problems["REBALANCE_WEBHOOK_SECRET"] = "the webhook processor needs a signing secret"
    if problems:
        raise ConfigError(problems)


async def process(job: Job) -> Any:
    settings = get_settings()
    body, headers = build_request(job, settings.rebalance_webhook_secret)
    timeout = settings.rebalance_webhook_timeout_ms / 1000
    client = await _client()
    try:
        response = await client.post(
            settings.rebalance_webhook_url, content=body, headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise WebhookRetryableError(f"webhook unreachable: {type(exc).__name__}") from exc
    return _classify(response)


def _classify(response: httpx.Response) -> Any:
    status = response.status_code
    if 200 <= status < 300:
        try:
            data = response.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    if status >= 500 or status in RETRYABLE_4XX:
        raise WebhookRetryableError(f"webhook answered {status}")
    raise PermanentJobError(f"webhook rejected the job with {status}")


# The running loops' clients, each with the generator that closes it when its loop shuts down
# (the loop holds its generators weakly: this entry keeps the generator alive until then).
_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncIterator[None]]
] = weakref.WeakKeyDictionary()


async def _client() -> httpx.AsyncClient:
    """The running loop's client, made on first use."""
    loop = asyncio.get_running_loop()
    entry = _clients.get(loop)
    if entry is None:
        # As many connections as the drain runs jobs at once (DRAIN_CONCURRENCY bounds them),
        # all kept alive for the next batch.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        client = httpx.AsyncClient(limits=limits)
        entry = _clients[loop] = (client, _closed_with_loop(loop, client))
        await anext(entry[1])  # registers the generator with the loop's shutdown
    return entry[0]


async def _closed_with_loop(
    loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient
) -> AsyncIterator[None]:
    try:
        yield
    finally:
        # The generator refers to its loop, so the weak key alone would never die: drop the
        # entry by hand, or every invocation's loop and client would stay in memory.
        _clients.pop(loop, None)
        await client.aclose()
