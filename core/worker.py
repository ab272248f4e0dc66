"""The original system's consumer API, for any queue: `dequeue_once` and a polling worker.

Both claim through the same leased, at-least-once path as the drain (`core.queue`). A
handler receives the `Job` (its `payload` is what was enqueued) and returns `True` (handled)
or `False` (requeue: retried with backoff, counted as a delivery); it may be sync or async,
and may raise `PermanentJobError` to dead-letter the job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from core.errors import UpstashError
from core.jobs import Job
from core.log import event, get_logger
from core.processors import run_job
from core.queue import Outcome, QueuePolicy, ack, claim, enqueue
from core.redis import RedisClient, TcpClient, get_client, make_tcp_client
from core.settings import get_settings

log = get_logger(__name__)

FAULT_PAUSE_S = 0.1  # after a failed call: doubled per failure in a row, up to the max
FAULT_MAX_PAUSE_S = 5.0

Handler = Callable[[Job], Any]

__all__ = ["PollingWorker", "dequeue_once", "enqueue", "start_polling_worker"]


def dequeue_once(
    queue: str,
    timeout_s: float,
    *,
    client: RedisClient | None = None,
    tcp: TcpClient | None = None,
    policy: QueuePolicy | None = None,
) -> Job | None:
    """Claim one job from `queue`, waiting up to `timeout_s`; None when nothing came.

    With `REDIS_URL` set (or `tcp` given) it blocks on the list over TCP (`BLMOVE` of the
    list onto itself, which waits without taking anything); over REST, which cannot block,
    it polls with backoff (50 ms x 1.5, at most 1 s). The job is leased: `ack` it.
    """
    policy = policy or QueuePolicy.from_settings(get_settings())
    tcp = tcp if tcp is not None else make_tcp_client(get_settings())
    client = tcp or client or get_client()
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        jobs = claim(client, queue, 1, policy).jobs
        left = deadline - time.monotonic()
        if jobs or left <= 0:
            return jobs[0] if jobs else None
        if tcp is not None:
            from core.keys import queue_key

            tcp.execute(
                [
                    "BLMOVE",
                    queue_key(queue),
                    queue_key(queue),
                    "RIGHT",
                    "RIGHT",
                    max(0.01, round(left, 2)),
                ]
            )
        else:
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, 1.0)


class PollingWorker:
    """A background thread that claims, handles and acknowledges one job at a time."""

    def __init__(
        self,
        queue: str,
        handler: Handler,
        interval_ms: int,
        max_interval_ms: int,
        empty_backoff_factor: float,
        client: RedisClient,
        policy: QueuePolicy,
    ) -> None:
        self.queue, self.handler, self.client, self.policy = queue, handler, client, policy
        self.interval_ms, self.max_interval_ms = interval_ms, max_interval_ms
        self.factor = empty_backoff_factor
        self.handled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"worker:{queue}", daemon=True)

    def start(self) -> PollingWorker:
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish the job in hand, then return; nothing else is claimed after this call."""
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        # One event loop for the worker's life: an async processor's clients (the webhook's
        # keep-alive connections) serve every job, and close when the worker stops.
        with asyncio.Runner() as runner:
            self._poll(runner)

    def _poll(self, runner: asyncio.Runner) -> None:
        interval = self.interval_ms
        failures = 0
        while not self._stop.is_set():
            try:
                jobs = claim(self.client, self.queue, 1, self.policy).jobs
            except UpstashError as exc:
                # Redis away for a moment (a reset, a 5xx, an outage): say so, back off, go on.
                failures += 1
                pause = min(FAULT_PAUSE_S * 2 ** (failures - 1), FAULT_MAX_PAUSE_S)
                event(log, "worker.claim_failed", logging.WARNING, error=str(exc), retry_in_s=pause)
                self._stop.wait(pause)
                continue
            failures = 0
            if not jobs:
                self._stop.wait(interval / 1000)
                interval = min(int(interval * self.factor), self.max_interval_ms)
                continue
            interval = self.interval_ms
            self._handle(jobs[0], runner)

    def _handle(self, job: Job, runner: asyncio.Runner) -> None:
        claimed = time.monotonic()
        lease_s = self.policy.lease_ms / 1000
        timeout_s = lease_s * 0.9
        outcome: Outcome = runner.run(run_job(self.handler, job, self.policy, timeout_s))
        # The ack is fenced, so resending it is safe; past the lease it would be stale anyway.
        pause = FAULT_PAUSE_S
        while True:
            try:
                ack(self.client, self.queue, [outcome], self.policy)
                break
            except UpstashError as exc:
                left = lease_s - (time.monotonic() - claimed)
                event(log, "worker.ack_failed", logging.WARNING, job_id=job.id, error=str(exc))
                if left <= pause:
                    return  # the lease will expire and the job will be delivered again
                time.sleep(pause)
                pause = min(pause * 2, FAULT_MAX_PAUSE_S)
        self.handled += 1
        event(log, "worker.job", job_id=job.id, outcome=outcome.kind, attempts=job.attempts)


def start_polling_worker(
    queue: str,
    handler: Handler,
    interval_ms: int = 500,
    max_interval_ms: int = 5000,
    empty_backoff_factor: float = 1.5,
    *,
    client: RedisClient | None = None,
    policy: QueuePolicy | None = None,
) -> PollingWorker:
    """Start polling `queue`; empty polls back off by `empty_backoff_factor` up to the max."""
    worker = PollingWorker(
        queue,
        handler,
        interval_ms,
        max_interval_ms,
        empty_backoff_factor,
        client or get_client(),
        policy or QueuePolicy.from_settings(get_settings()),
    )
    return worker.start()
