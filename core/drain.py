"""The drain: one invocation of the scheduled consumer, bounded by the time it has left.

Loop, until the budget (the Lambda's remaining time minus a safety margin) runs out: one
round trip settles the batch in hand and claims the next (the claim script also returns
expired leases and due retries to the queue), then the batch runs concurrently. The first
claim and the last acknowledgement go alone. On an empty queue it polls with one cheap
command (`has_due_work`) and backs off (500 ms x 1.5 up to 5 s by default); with
`DRAIN_IDLE_EXIT_MS` it returns after that much idle time.

Leases are counted from the claim: a batch gets until `claim time + lease - ack margin`
(and never past the budget), so its acknowledgement lands while the lease still holds and
no other consumer can take the same jobs. A job still running then is a timeout (retried),
one never started is released unchanged.

Faults: every claim script call carries a receipt token and is resent, with the same token,
until it lands or the budget is spent: a resend after a lost answer gets the same batch back
(no delivery burned), and acknowledgements are fenced, so a resend never counts twice. An
idle poll that fails is a failed poll: the drain backs off and goes on. A drain killed at any
line leaves leases that expire and are handed out again: nothing is lost.

Elastic (`crew`, see `core.elastic`): the drain joins the running drains before its loop
(or returns at once: nothing due, or enough drains running) and leaves them after it; work
that came due while it was leaving runs the loop again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from core import keys
from core.errors import UpstashError
from core.jobs import Job, now_ms
from core.log import event, get_logger
from core.processors import Processor, run_job, timed_out
from core.queue import Cycle, Outcome, QueuePolicy, claim_and_ack, has_due_work
from core.redis import RedisClient
from core.settings import Settings, options_from, setting

if TYPE_CHECKING:
    from core.elastic import Crew
    from core.push import Pusher

log = get_logger(__name__)

MIN_BATCH_BUDGET_MS = 50  # below this, claiming would only lease jobs we cannot run
RESEND_FIRST_PAUSE_S = 0.05
RESEND_MAX_PAUSE_S = 1.0
PUSH_WAIT_S = 2.0  # at the end of an invocation, for WebSocket posts still in flight


@dataclass(frozen=True)
class DrainOptions:
    batch_size: int = setting("drain_batch_size")
    concurrency: int = setting("drain_concurrency")
    poll_interval_ms: int = setting("drain_poll_interval_ms")
    poll_max_interval_ms: int = setting("drain_poll_max_interval_ms")
    backoff_factor: float = setting("drain_backoff_factor")
    idle_exit_ms: int | None = setting("drain_idle_exit_ms")
    safety_margin_ms: int = setting("drain_safety_margin_ms")

    @classmethod
    def from_settings(cls, settings: Settings) -> DrainOptions:
        return options_from(cls, settings)


@dataclass
class DrainSummary:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    expired: int = 0
    cancelled: int = 0
    parked: int = 0
    stale: int = 0
    requeued: int = 0
    batches: int = 0
    polls: int = 0
    faults: int = 0
    roundTrips: int = 0
    durationMs: int = 0
    stopReason: str = ""
    started: int = 0  # drains this one started (fan-out, hand-over)

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
    crew: Crew | None = None,
    pusher: Pusher | None = None,
) -> DrainSummary:
    """Run one drain invocation; returns its summary. Blocking (runs its own event loop).

    With a `pusher`, every status change that a WebSocket subscriber waits for is posted in
    the background; before returning, the drain gives the last posts what time is left.
    """
    run = _Drain(client, processor, remaining_ms, policy, options, queue, crew)
    run.pusher = pusher
    try:
        return asyncio.run(run.run())
    finally:
        if pusher is not None:
            pusher.wait(min(PUSH_WAIT_S, max(0, remaining_ms() - 200) / 1000))


def ack_margin_ms(lease_ms: int) -> int:
    """Time kept inside a lease for the acknowledgement to land: a tenth, 200 ms to 5 s."""
    return max(200, min(lease_ms // 10, 5000))


class _Drain:
    def __init__(
        self,
        client: RedisClient,
        processor: Processor,
        remaining_ms: Callable[[], int],
        policy: QueuePolicy,
        options: DrainOptions,
        queue: str,
        crew: Crew | None = None,
    ) -> None:
        self.client, self.processor, self.queue, self.crew = client, processor, queue, crew
        self.remaining_ms, self.policy, self.options = remaining_ms, policy, options
        self.summary = DrainSummary()
        self.pusher: Pusher | None = None  # WebSocket pushes (see `drain`)
        # Sync processors get their own threads, as many as the drain runs at once.
        self._executor: ThreadPoolExecutor | None = None
        if not inspect.iscoroutinefunction(processor):
            self._executor = ThreadPoolExecutor(options.concurrency, "processor")

    def budget_ms(self) -> int:
        return self.remaining_ms() - self.options.safety_margin_ms

    async def run(self) -> DrainSummary:
        started, trips_before = time.monotonic(), self.client.round_trips
        try:
            self.summary.stopReason = await (self._elastic() if self.crew else self._loop())
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
        self.summary.durationMs = int((time.monotonic() - started) * 1000)
        self.summary.roundTrips = self.client.round_trips - trips_before
        busy = self.summary.claimed or self.summary.requeued or self.summary.dead
        level = logging.INFO if busy or self.summary.faults else logging.DEBUG
        event(log, "drain.done", level, **self.summary.as_dict())
        return self.summary

    async def _elastic(self) -> str:
        """Join the running drains (or return at once), drain, leave; again while work
        arrives as it leaves."""
        assert self.crew is not None
        refused = self.crew.join()
        if refused:
            self.summary.polls += int(refused == "nothing_due")
            return refused
        try:
            reason = await self._loop()
            while self.crew.leave(reason):
                reason = await self._loop()
            return reason
        finally:
            self.crew.close()
            self.summary.started = self.crew.started

    async def _loop(self) -> str:
        opts = self.options
        interval = opts.poll_interval_ms
        idle_since: float | None = None
        check_first = False  # the first poll always runs the full claim
        outcomes: list[Outcome] = []
        while True:
            if self.budget_ms() <= MIN_BATCH_BUDGET_MS:
                if outcomes:
                    self._cycle(outcomes, 0)
                return "deadline"
            if not outcomes:
                self.summary.polls += 1
            if check_first and not outcomes and not self._has_work():
                jobs: list[Job] = []
            else:
                cycle = self._cycle(outcomes, opts.batch_size)
                outcomes = []
                if cycle is None:
                    return "deadline"
                jobs = cycle.jobs
                if jobs:
                    outcomes = await self._process(jobs, cycle.claimed_at)
                    interval, idle_since, check_first = opts.poll_interval_ms, None, False
                    continue
            check_first = True
            idle_since = idle_since or time.monotonic()
            idle_ms = (time.monotonic() - idle_since) * 1000
            if opts.idle_exit_ms is not None and idle_ms >= opts.idle_exit_ms:
                return "idle"
            pause: float = min(interval, max(0, self.budget_ms()))
            if opts.idle_exit_ms is not None:
                pause = min(pause, max(1, opts.idle_exit_ms - idle_ms))
            await asyncio.sleep(pause / 1000)
            interval = min(int(interval * opts.backoff_factor), opts.poll_max_interval_ms)

    def _has_work(self) -> bool:
        """The cheap idle check; a failed check counts as work, so the claim (resent until
        it lands) finds out."""
        try:
            return has_due_work(self.client, self.queue)
        except UpstashError as exc:
            self._fault("drain.poll_failed", exc)
            return True

    def _cycle(self, outcomes: list[Outcome], batch: int) -> Cycle | None:
        """Settle `outcomes` and claim up to `batch` jobs, resending the same call (same
        receipt, same clock) until it lands. None when the budget ran out first: unsent
        outcomes then wait for their leases to expire."""
        receipt, now = uuid.uuid4().hex, now_ms()
        pause = RESEND_FIRST_PAUSE_S
        while True:
            try:
                cycle = claim_and_ack(
                    self.client, self.queue, outcomes, batch, self.policy,
                    now=now, receipt=receipt, notify=self.pusher is not None,
                )  # fmt: skip
                break
            except UpstashError as exc:
                self._fault("drain.cycle_failed", exc)
                # The last acknowledgement may use the safety margin, a claim may not.
                left = self.remaining_ms() - (200 if batch == 0 else self.options.safety_margin_ms)
                if left <= pause * 1000:
                    return None
                time.sleep(pause)
                pause = min(pause * 2, RESEND_MAX_PAUSE_S)
        self._tally(cycle, outcomes)
        if self.pusher is not None and cycle.pushes:
            self.pusher.send(cycle)  # posts go out in push threads: the loop goes on at once
        return cycle

    def _fault(self, name: str, exc: Exception) -> None:
        self.summary.faults += 1
        event(log, name, logging.WARNING, error=str(exc))

    def _tally(self, cycle: Cycle, outcomes: list[Outcome]) -> None:
        s = self.summary
        if outcomes:
            s.batches += 1
        s.claimed += len(cycle.jobs)
        s.requeued += cycle.requeued
        s.dead += cycle.dead + cycle.counts.get("dead", 0)
        s.stale += cycle.stale
        s.succeeded += cycle.counts.get("ok", 0)
        s.retried += cycle.counts.get("retry", 0)
        s.released += cycle.counts.get("release", 0)
        s.expired += cycle.expired
        s.cancelled += cycle.skipped
        s.parked += cycle.parked
        for outcome in outcomes:
            if outcome.kind not in ("ok", "release"):
                event(log, "job." + outcome.kind, logging.WARNING, job_id=outcome.job.id,
                      attempts=outcome.job.attempts, error=outcome.error)  # fmt: skip

    async def _process(self, jobs: list[Job], claimed_at: int) -> list[Outcome]:
        """Run the batch, at most `concurrency` at once, all inside one deadline.

        The deadline keeps the acknowledgement inside the lease counted from the claim, and
        inside the budget. Past it, a job still running is a timeout (retried); one never
        started is released as it was. One timer for the batch, `concurrency` workers.
        """
        lease_end = claimed_at + self.policy.lease_ms - ack_margin_ms(self.policy.lease_ms)
        limit_s = min(lease_end - now_ms(), self.budget_ms()) / 1000
        if limit_s <= 0:
            return [Outcome(job, "release") for job in jobs]
        results: dict[int, Outcome] = {}
        started: dict[int, float] = {}
        queue = iter(enumerate(jobs))

        async def worker() -> None:
            for index, job in queue:
                if self.budget_ms() <= 0:  # the rest go back unstarted
                    return
                started[index] = time.perf_counter()
                results[index] = await run_job(
                    self.processor, job, self.policy, executor=self._executor
                )

        workers = [
            asyncio.ensure_future(worker()) for _ in range(min(len(jobs), self.options.concurrency))
        ]
        _, late = await asyncio.wait(workers, timeout=limit_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        return [
            results[i] if i in results
            else timed_out(job, self.policy, started[i]) if i in started
            else Outcome(job, "release")
            for i, job in enumerate(jobs)
        ]  # fmt: skip
