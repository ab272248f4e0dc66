"""Crash test: drains SIGKILLed at random moments lose nothing and count nothing twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import valkey

from core import keys, queue
from core.redis import RestClient
from tests.core.conftest import Q

JOBS = 300


def spawn_drain(env: dict[str, str], budget_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "drain", "--budget-seconds", str(budget_s)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def wait_for_fresh_lease(backend: valkey.Valkey, since_ms: int, timeout_s: float = 60) -> bool:
    """True once a drain started after `since_ms` holds a lease (it is mid-batch); False
    when no work is left at all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leased = backend.hvals(keys.leased_key(Q))
        if any(json.loads(raw).get("claimed_at", 0) >= since_ms for raw in leased):
            return True
        if not (leased or backend.llen(Q) or backend.hlen(keys.delayed_key(Q))):
            return False
        time.sleep(0.005)
    raise AssertionError("no drain started working")


@pytest.mark.timeout(180)
def test_killed_drains_lose_nothing_and_count_once(
    rest: RestClient, backend: valkey.Valkey, env: dict[str, str]
) -> None:
    """Rounds of two drains, each killed at a random instant; then one drain finishes.

    Every job ends `succeeded`, the succeeded counters equal the number of distinct jobs,
    and nothing is left queued, leased or delayed.
    """
    ids = [queue.enqueue(Q, {"i": i}, client=rest) for i in range(JOBS)]
    drain_env = {
        **os.environ,
        **env,
        "REBALANCE_PROCESSOR": "core.processors.simulated:process",
        "SIM_LATENCY_MS": "20",
        "SIM_FAILURE_RATE": "0",
        "JOB_LEASE_SECONDS": "1",
        "JOB_MAX_ATTEMPTS": "100",
        "DRAIN_BATCH_SIZE": "5",
        "DRAIN_POLL_INTERVAL_MS": "20",
        "DRAIN_SAFETY_MARGIN_MS": "100",
        "LOG_LEVEL": "ERROR",
    }
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        started_ms = int(time.time() * 1000)
        procs = [spawn_drain(drain_env, 30) for _ in range(2)]
        # Kill mid-batch, however slowly this machine starts processes.
        working = wait_for_fresh_lease(backend, started_ms)
        time.sleep(rng.uniform(0, 0.3) if working else 0)
        for proc in procs:
            time.sleep(rng.uniform(0, 0.1))
            with proc:  # waits, and closes its pipe
                proc.send_signal(signal.SIGKILL)
            kills += proc.returncode == -signal.SIGKILL
        if not working:
            break
    assert kills >= 2
    assert queue.depth(rest, Q)["queued"] < JOBS  # the killed drains did get work done

    time.sleep(1.1)  # every lease of a killed drain has expired
    final = spawn_drain({**drain_env, "DRAIN_IDLE_EXIT_MS": "1500"}, 60)
    out, _ = final.communicate(timeout=90)
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert final.returncode == 0 and summary["stopReason"] == "idle"

    statuses = [json.loads(backend.get(keys.job_key(job_id)))["status"] for job_id in ids]
    assert statuses == ["succeeded"] * JOBS
    assert backend.hget(keys.TOTALS, keys.SUCCEEDED) == str(JOBS)
    today = keys.day(int(time.time() * 1000))
    daily = sum(
        int(backend.get(keys.counter_key(day, keys.SUCCEEDED)) or 0)
        for day in {today, keys.day(int(time.time() * 1000) - 120_000)}
    )
    assert daily == JOBS
    assert queue.depth(rest, Q) == {"queued": 0, "leased": 0, "delayed": 0, "dead": 0}
    assert backend.zcard(keys.schedule_key(Q)) == 0
