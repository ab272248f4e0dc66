"""Driving the elastic drain on the dev stack, for tests and `make bench`: queue a backlog, wake
one drain as a submit would, time it until every job is done and every drain has gone."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import elastic, keys, queue
from core.redis import RedisClient
from devstack.dev import Ticker
from tests.support.slow import STATS

Q = keys.REQUEST_QUEUE


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


def drain_backlog(client: RedisClient, backend: Any, max_parallel: int, jobs: int) -> BacklogRun:
    """Flush, queue `jobs`, wake one drain; returns once all succeeded and the drains left.
    The environment (processor, DRAIN_* settings) must be set, and the settings re-read."""
    backend.flushall()
    STATS.reset()
    for i in range(jobs):
        queue.enqueue(Q, {"i": i}, client=client)
    ticker = Ticker(3600, max_parallel)  # no schedule here: the wake alone does it
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
