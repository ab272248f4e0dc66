"""Pushing status changes to WebSocket subscribers, off the drain's critical path.

The claim script names the changes someone listens to (`Cycle.pushes`: job id, connection
ids, the status record as it left it); `messages` turns them into the status route's body,
and a `Pusher` posts them with API Gateway's `post_to_connection` in background threads, so
a batch's posts go out concurrently and never delay the next claim. Each connection has one
lane (a single thread, chosen by its id), so its messages arrive in the order of the changes.
A post that finds the connection gone (410 `GoneException`) forgets it (`core.subscriptions
.forget`); any other failure is logged and dropped: pushes are best effort, the status route
stays the truth.

boto3 is imported here, on first post, in a push thread: never on a cold start, never on
the submit/status/metrics path. `make dev` points the same boto3 client at a local stand-in
of the management API (`devstack.events`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from core.jobs import Job, dumps, status_view
from core.log import event, get_logger
from core.queue import Cycle

log = get_logger(__name__)

DEFAULT_LANES = 8
POST_TIMEOUT_S = 2.0


class GoneError(Exception):
    """The connection is closed: API Gateway answered 410."""


Poster = Callable[[str, bytes], None]  # (connection id, data); raises GoneError when gone
Forget = Callable[[str, str], None]  # (connection id, job id)


@dataclass(frozen=True)
class Message:
    job_id: str
    connection_ids: tuple[str, ...]
    data: bytes


def messages(cycle: Cycle) -> Iterator[Message]:
    """The status bodies of `cycle.pushes`, as `GET /api/agent/rebalance/{jobId}` answers them."""
    from core.submit import public_view  # the status route's redaction and size bounds

    claimed = {job.id: job for job in cycle.jobs}
    for job_id, connections, raw in cycle.pushes:
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # the record expired: nothing true to say
        view = public_view(status_view(record, _leased(claimed.get(job_id))))
        yield Message(job_id, tuple(connections.split()), dumps(view).encode())


def _leased(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {"attempts": job.attempts, "claimed_at": job.extra.get("claimed_at")}


class Pusher:
    """Posts messages in background lanes; `send` returns at once."""

    def __init__(self, post: Poster, forget: Forget, lanes: int = DEFAULT_LANES) -> None:
        self._post, self._forget = post, forget
        self._lanes = [ThreadPoolExecutor(1, f"push-{i}") for i in range(lanes)]
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()
        self.sent = self.gone = self.failed = 0

    def send(self, cycle: Cycle) -> int:
        """Queue the posts of `cycle`'s changes; returns how many."""
        count = 0
        for message in messages(cycle):
            for connection_id in message.connection_ids:
                lane = self._lanes[zlib.crc32(connection_id.encode()) % len(self._lanes)]
                future = lane.submit(self._deliver, connection_id, message)
                with self._lock:
                    self._pending.add(future)
                future.add_done_callback(self._done)
                count += 1
        return count

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the queued posts (a Lambda is frozen once it returns);
        True when none is left."""
        with self._lock:
            pending = set(self._pending)
        if not pending:
            return True
        _, left = wait(pending, timeout=max(0.0, timeout_s))
        return not left

    def close(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=False, cancel_futures=True)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _deliver(self, connection_id: str, message: Message) -> None:
        try:
            self._post(connection_id, message.data)
            self._count("sent")
        except GoneError:
            self._count("gone")
            self._forget_quietly(connection_id, message.job_id)
        except Exception as exc:  # a push is best effort: never let it break the drain
            self._count("failed")
            event(log, "push.failed", logging.WARNING, job_id=message.job_id, error=str(exc))

    def _count(self, name: str) -> None:
        with self._lock:  # lanes finish posts concurrently
            setattr(self, name, getattr(self, name) + 1)

    def _forget_quietly(self, connection_id: str, job_id: str) -> None:
        try:
            self._forget(connection_id, job_id)
        except Exception as exc:  # the subscription expires within 2 h anyway
            event(log, "push.forget_failed", logging.WARNING, job_id=job_id, error=str(exc))


_REGION = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com")


def management_poster(endpoint_url: str, region: str | None = None, lanes: int = 8) -> Poster:
    """`post_to_connection` of API Gateway's management API at `endpoint_url`; the boto3
    client is built on the first post (in a push thread) and shared by every lane."""
    poster: Poster | None = None
    lock = threading.Lock()

    def post(connection_id: str, data: bytes) -> None:
        nonlocal poster
        with lock:
            if poster is None:
                poster = client_poster(_management_client(endpoint_url, region, lanes))
        poster(connection_id, data)

    return post


def client_poster(client: Any) -> Poster:
    """A poster over a boto3 `apigatewaymanagementapi` client: 410 Gone is a `GoneError`."""

    def post(connection_id: str, data: bytes) -> None:
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=data)
        except client.exceptions.GoneException:
            raise GoneError(connection_id) from None

    return post


def _management_client(endpoint_url: str, region: str | None, lanes: int) -> Any:
    import boto3  # the push path only: never loaded by a cold start
    from botocore.config import Config

    match = _REGION.search(endpoint_url)
    config = Config(
        connect_timeout=POST_TIMEOUT_S,
        read_timeout=POST_TIMEOUT_S,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=lanes,
    )
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint_url,
        region_name=region or (match.group(1) if match else "us-east-1"),
        config=config,
    )
