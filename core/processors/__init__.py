"""Processors: what runs a job. `REBALANCE_PROCESSOR=module:function`, sync or async.

A processor receives a `core.jobs.Job` (`id`, `user_id`, `public_key`, `payload`,
`attempts`, as attributes or as keys: `job["payload"]`). Returning `None` or `True` means
done (a dict or list returned is stored as the job's `result`); `False` means try again
later; raising `PermanentJobError` dead-letters the job now; any other exception is retried
until `JOB_MAX_ATTEMPTS` deliveries.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from core.errors import ConfigError, PermanentJobError
from core.jobs import Job
from core.queue import Outcome, QueuePolicy, decode_result
from core.settings import get_settings

Processor = Callable[[Job], Any | Awaitable[Any]]


def load_processor(spec: str) -> Processor:
    """Import `module:function`; a bad spec is a `ConfigError`, never a job failure."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError({"REBALANCE_PROCESSOR": f"cannot import {module_name!r}: {exc}"}) from exc
    target: Processor | None = getattr(module, attr, None)
    if not callable(target):
        raise ConfigError({"REBALANCE_PROCESSOR": f"{spec!r} is not a callable"})
    check = getattr(module, "check_config", None)
    if callable(check):
        check(get_settings())  # a processor's own settings fail the start, not the jobs
    return target


async def run_job(
    processor: Processor,
    job: Job,
    policy: QueuePolicy,
    timeout_s: float | None = None,
    *,
    executor: Executor | None = None,
) -> Outcome:
    """Run one job and classify how it ended; never raises (but re-raises cancellation).

    A sync processor runs in `executor` (the drain's own threads; default: asyncio's).
    `timeout_s=None` leaves the deadline to the caller (the drain times a whole batch)."""
    started = time.perf_counter()
    try:
        if timeout_s is None:
            value = await _call(processor, job, executor)
        else:
            async with asyncio.timeout(timeout_s):
                value = await _call(processor, job, executor)
    except PermanentJobError as exc:
        return _failed(job, "dead", exc, started)
    except TimeoutError as exc:
        return timed_out(job, policy, started, exc)
    except Exception as exc:
        return _failed(job, _retry_or_dead(job, policy), exc, started)
    ms = (time.perf_counter() - started) * 1000
    if value is False:
        kind = _retry_or_dead(job, policy)
        return Outcome(job, kind, ms, error="processor asked to try again later")
    return Outcome(job, "ok", ms, result=decode_result(value))


async def _call(processor: Processor, job: Job, executor: Executor | None) -> Any:
    if inspect.iscoroutinefunction(processor):
        return await processor(job)
    value = await asyncio.get_running_loop().run_in_executor(executor, processor, job)
    if inspect.isawaitable(value):
        value = await value
    return value


def timed_out(
    job: Job, policy: QueuePolicy, started: float, exc: BaseException | None = None
) -> Outcome:
    """The outcome of a job whose processor ran out of time (retried like any failure)."""
    seconds = time.perf_counter() - started
    return _failed(
        job,
        _retry_or_dead(job, policy),
        exc or TimeoutError(),
        started,
        f"timed out after {seconds:.1f} s",
    )


def _retry_or_dead(job: Job, policy: QueuePolicy) -> Any:
    return "dead" if job.attempts >= policy.max_attempts else "retry"


def _failed(
    job: Job, kind: Any, exc: BaseException, started: float, message: str | None = None
) -> Outcome:
    ms = (time.perf_counter() - started) * 1000
    error = message or f"{type(exc).__name__}: {exc}"[:2000]
    stack = "".join(traceback.format_exception(exc))[-8000:]
    return Outcome(job, kind, ms, error=error, stack=stack)
