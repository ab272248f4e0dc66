"""A backlog for the elastic drain on the local stack, for the tests and `make bench`.

Probe processors that note when each job started and how many run at once (`STATS`: the
drains that run them are threads of the same process), and `drain_backlog`: queue a backlog,
wake one drain as a submit would, and time it until every job is done and every drain has
gone. Point `REBALANCE_PROCESSOR` (or `Settings.rebalance_processor`) at
`devstack.backlog:one_second` or `devstack.backlog:instant`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.jobs import Job
    from core.redis import RedisClient
    from core.settings import Settings
    from devstack.dev import Ticker

SECONDS = 1.0  # how long `one_second` takes


@dataclass
class Stats:
    running: int = 0
    peak: int = 0
    started: dict[str, float] = field(default_factory=dict)  # job id -> time.monotonic()
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.running = self.peak = 0
            self.started.clear()


STATS = Stats()


async def one_second(job: Job) -> None:
    """Waits `SECONDS`, counting how many calls run at once."""
    with STATS.lock:
        STATS.started.setdefault(job.id, time.monotonic())
        STATS.running += 1
        STATS.peak = max(STATS.peak, STATS.running)
    try:
        await asyncio.sleep(SECONDS)
    finally:
        with STATS.lock:
            STATS.running -= 1


async def instant(job: Job) -> None:
    """Notes when the job started, and returns."""
    with STATS.lock:
        STATS.started.setdefault(job.id, time.monotonic())


def wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        time.sleep(0.02)


@dataclass
class BacklogRun:
    seconds: float  # from the wake until the last job was acknowledged
    ticker: Ticker
    peak_jobs: int  # most jobs running at once, across all drains


def drain_backlog(client: RedisClient, backend: Any, settings: Settings, jobs: int) -> BacklogRun:
    """Flush, queue `jobs`, wake one drain; returns once all succeeded and the drains left.
    The drains run with `settings` (processor, DRAIN_* values), at most its
    `drain_max_parallel` at once; `backend` is a direct client to the server."""
    from core import elastic, keys, queue
    from devstack.dev import Ticker

    backend.flushall()
    STATS.reset()
    for i in range(jobs):
        queue.enqueue(keys.REQUEST_QUEUE, {"i": i}, client=client)
    # No schedule here: the wake alone does it.
    ticker = Ticker(3600, settings.drain_max_parallel, settings=settings)
    elastic.use_waker(ticker.wake)
    try:
        started = time.monotonic()
        if not ticker.wake(elastic.wake_event("submit")):
            raise RuntimeError("the first wake was refused")
        wait_for(lambda: int(backend.hget(keys.TOTALS, "succeeded") or 0) == jobs, 600)
        seconds = time.monotonic() - started
        wait_for(lambda: elastic.running_drains(client) == 0, 30)
    finally:
        ticker.stop()
        elastic.use_waker(None)
    return BacklogRun(seconds, ticker, STATS.peak)
