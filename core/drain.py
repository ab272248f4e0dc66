"""The drain: one invocation of the scheduled consumer, bounded by the time it has left.

Loop, until the budget (the Lambda's remaining time minus a safety margin) runs out:
claim a batch (one round trip, which also returns expired leases and due retries to the
queue), run it concurrently, acknowledge it (one round trip). While the queue is busy, the
next batch is claimed (from a worker thread) while the current one runs. On an empty queue it polls
with one cheap command (`has_due_work`) and backs off (500 ms x 1.5 up to 5 s by default);
with `DRAIN_IDLE_EXIT_MS` it returns after that much idle time.

Every claimed job ends in exactly one ack outcome. Jobs are given at most the time left in
the budget and inside their lease, so the ack lands before another consumer could take
them; a job not started before the deadline is released unchanged. A drain killed at any
line leaves leases that expire and are handed out again: nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from core import keys
from core.jobs import Job
from core.log import event, get_logger
from core.processors import Processor, run_job, timed_out
from core.queue import Outcome, QueuePolicy, ack, claim, has_due_work
from core.redis import RedisClient
from core.settings import Settings

log = get_logger(__name__)

MIN_BATCH_BUDGET_MS = 50  # below this, claiming would only lease jobs we cannot run


@dataclass(frozen=True)
class DrainOptions:
    batch_size: int = 10
    concurrency: int = 10
    poll_interval_ms: int = 500
    poll_max_interval_ms: int = 5000
    backoff_factor: float = 1.5
    idle_exit_ms: int | None = None
    safety_margin_ms: int = 3000

    @classmethod
    def from_settings(cls, settings: Settings) -> DrainOptions:
        return cls(
            batch_size=settings.drain_batch_size,
            concurrency=settings.drain_concurrency,
            poll_interval_ms=settings.drain_poll_interval_ms,
            poll_max_interval_ms=settings.drain_poll_max_interval_ms,
            backoff_factor=settings.drain_backoff_factor,
            idle_exit_ms=settings.drain_idle_exit_ms,
            safety_margin_ms=settings.drain_safety_margin_ms,
        )


@dataclass
class DrainSummary:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    stale: int = 0
    requeued: int = 0
    batches: int = 0
    polls: int = 0
    roundTrips: int = 0
    durationMs: int = 0
    stopReason: str = ""

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def drain(
    client: RedisClient,
    processor: Processor,
    remaining_ms: Callable[[], int],
    *,
    policy: QueuePolicy,
    options: DrainOptions,
    queue: str = keys.REQUEST_QUEUE,
) -> DrainSummary:
    """Run one drain invocation; returns its summary. Blocking (runs its own event loop)."""
    return asyncio.run(_Drain(client, processor, remaining_ms, policy, options, queue).run())


class _Drain:
    def __init__(
        self,
        client: RedisClient,
        processor: Processor,
        remaining_ms: Callable[[], int],
        policy: QueuePolicy,
        options: DrainOptions,
        queue: str,
    ) -> None:
        self.client, self.processor, self.queue = client, processor, queue
        self.remaining_ms, self.policy, self.options = remaining_ms, policy, options
        self.summary = DrainSummary()
        self._last_batch_ms = 0.0

    def budget_ms(self) -> int:
        return self.remaining_ms() - self.options.safety_margin_ms

    async def run(self) -> DrainSummary:
        started, trips_before = time.monotonic(), self.client.round_trips
        self.summary.stopReason = await self._loop()
        self.summary.durationMs = int((time.monotonic() - started) * 1000)
        self.summary.roundTrips = self.client.round_trips - trips_before
        busy = self.summary.claimed or self.summary.requeued or self.summary.dead
        event(log, "drain.done", logging.INFO if busy else logging.DEBUG, **self.summary.as_dict())
        return self.summary

    async def _loop(self) -> str:
        opts = self.options
        interval = opts.poll_interval_ms
        idle_since: float | None = None
        check_first = False  # the first poll always runs the full claim
        while self.budget_ms() > MIN_BATCH_BUDGET_MS:
            self.summary.polls += 1
            idle = check_first and not has_due_work(self.client, self.queue)
            jobs = [] if idle else self._claim()
            if jobs:
                await self._burst(jobs)
                interval, idle_since, check_first = opts.poll_interval_ms, None, False
                continue
            check_first = True
            idle_since = idle_since or time.monotonic()
            idle_ms = (time.monotonic() - idle_since) * 1000
            if opts.idle_exit_ms is not None and idle_ms >= opts.idle_exit_ms:
                return "idle"
            pause = min(interval, max(0, self.budget_ms()))
            if opts.idle_exit_ms is not None:
                pause = min(pause, max(1, opts.idle_exit_ms - idle_ms))
            await asyncio.sleep(pause / 1000)
            interval = min(int(interval * opts.backoff_factor), opts.poll_max_interval_ms)
        return "deadline"

    async def _burst(self, jobs: list[Job]) -> None:
        """Work through a busy queue: the next batch is claimed while this one runs.

        Still two round trips per batch, but the claim's latency hides behind the
        processing and the ack. Near the deadline nothing is claimed ahead; a batch claimed
        ahead that no longer fits is released untouched.
        """
        while jobs:
            started = time.monotonic()
            ahead = None
            if self.budget_ms() > 2 * self._last_batch_ms + MIN_BATCH_BUDGET_MS:
                ahead = asyncio.ensure_future(asyncio.to_thread(self._claim))
            await self._run_batch(jobs)
            self._last_batch_ms = (time.monotonic() - started) * 1000
            if ahead is None:
                return
            self.summary.polls += 1
            jobs = await ahead
            if jobs and self.budget_ms() <= MIN_BATCH_BUDGET_MS:
                result = ack(
                    self.client, self.queue, [Outcome(j, "release") for j in jobs], self.policy
                )
                self.summary.released += result.counts.get("release", 0)
                return

    def _claim(self) -> list[Job]:
        result = claim(self.client, self.queue, self.options.batch_size, self.policy)
        self.summary.requeued += result.requeued
        self.summary.dead += result.dead
        self.summary.claimed += len(result.jobs)
        return result.jobs

    async def _run_batch(self, jobs: list[Job]) -> None:
        # Jobs get what is left of the budget, and never more than their lease, so that
        # the ack reaches Redis before any other consumer may take them.
        limit_s = min(self.budget_ms(), int(self.policy.lease_ms * 0.9)) / 1000
        outcomes = await self._process(jobs, limit_s)
        result = ack(self.client, self.queue, outcomes, self.policy)
        self.summary.batches += 1
        self.summary.stale += result.stale
        self.summary.succeeded += result.counts.get("ok", 0)
        self.summary.retried += result.counts.get("retry", 0)
        self.summary.dead += result.counts.get("dead", 0)
        self.summary.released += result.counts.get("release", 0)
        for outcome in outcomes:
            if outcome.kind not in ("ok", "release"):
                event(
                    log,
                    "job." + outcome.kind,
                    logging.WARNING,
                    job_id=outcome.job.id,
                    attempts=outcome.job.attempts,
                    error=outcome.error,
                )

    async def _process(self, jobs: list[Job], limit_s: float) -> list[Outcome]:
        """Run the batch, at most `concurrency` at once, all inside one deadline.

        Past it, a job still running is a timeout (retried); one never started is released
        as it was. One timer for the batch, not one per job.
        """
        gate = asyncio.Semaphore(self.options.concurrency)
        started: dict[int, float] = {}

        async def one(index: int, job: Job) -> Outcome:
            async with gate:
                started[index] = time.perf_counter()
                return await run_job(self.processor, job, self.policy)

        tasks = [asyncio.ensure_future(one(i, job)) for i, job in enumerate(jobs)]
        _, late = await asyncio.wait(tasks, timeout=limit_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        return [
            task.result()
            if task not in late
            else timed_out(job, self.policy, started[i])
            if i in started
            else Outcome(job, "release")
            for i, (job, task) in enumerate(zip(jobs, tasks, strict=True))
        ]
