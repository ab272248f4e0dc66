"""A processor that waits one second, counting how many of its calls run at once.

Dev-stack tests point `REBALANCE_PROCESSOR` here (`tests.support.slow:one_second`): the drains
that run it live in other threads of the test process, and report through `STATS`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from core.jobs import Job


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
SECONDS = 1.0


async def one_second(job: Job) -> None:
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
