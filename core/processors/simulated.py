"""The demo processor: waits `SIM_LATENCY_MS`, fails at random with `SIM_FAILURE_RATE`.

`noop` does nothing at all; benchmarks and the crash tests use it to measure the queue alone.
"""

from __future__ import annotations

import asyncio
import random

from core.jobs import Job
from core.settings import get_settings


class SimulatedFailure(RuntimeError):
    """A failure drawn by the simulation; retried like any other error."""


async def process(job: Job) -> dict[str, object]:
    settings = get_settings()
    if settings.sim_latency_ms:
        await asyncio.sleep(settings.sim_latency_ms / 1000)
    if random.random() < settings.sim_failure_rate:
        raise SimulatedFailure(f"simulated failure on delivery {job.attempts}")
    return {"rebalanced": True, "attempts": job.attempts}


async def noop(job: Job) -> None:
    """Succeeds at once (async, like the processors that matter: they wait on the network)."""
