"""A misbehaving network between the drain and Upstash: nothing lost, nothing run twice that
need not be, no delivery burned by a fault the drain could retry.

The faults come from a real proxy (`tests/support/faults.py`) in front of the real gateway:
answers dropped after the command ran, truncated, delivered late, connections reset, 5xx
with every body shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
import valkey

from core import keys, queue
from core.drain import DrainOptions, drain
from core.jobs import Job
from core.queue import CLAIM, QueuePolicy
from core.redis import RestClient
from tests.conftest import Stack
from tests.core.conftest import Q
from tests.support.faults import KINDS, FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def record_of(backend: valkey.Valkey, job_id: str) -> dict[str, Any]:
    return json.loads(backend.get(keys.job_key(job_id)))


def test_drains_ride_through_random_faults_of_every_kind(
    stack: Stack, rest: RestClient, backend: valkey.Valkey, env: dict[str, str]
) -> None:
    """20% of requests faulted, every kind: 300 jobs all succeed on their first delivery,
    counted once; nothing is left leased, delayed or scheduled; both drains exit 0."""
    jobs = 300
    ids = [queue.enqueue(Q, {"i": i}, client=rest) for i in range(jobs)]
    with FaultProxy(stack.url, rate=0.2, seed=11, hold_s=1.0) as proxy:
        drain_env = {
            **os.environ,
            **env,
            "UPSTASH_REDIS_REST_URL": proxy.url,
            "UPSTASH_TIMEOUT_MS": "600",
            "JOB_LEASE_SECONDS": "30",
            "DRAIN_BATCH_SIZE": "10",
            "DRAIN_POLL_INTERVAL_MS": "50",
            "DRAIN_SAFETY_MARGIN_MS": "500",
            "DRAIN_IDLE_EXIT_MS": "1500",
            "REBALANCE_PROCESSOR": "core.processors.simulated:process",
            "SIM_LATENCY_MS": "5",
            "LOG_LEVEL": "ERROR",
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "cli.main", "drain", "--budget-seconds", "90"],
                env=drain_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        finished = [proc.communicate(timeout=150) for proc in procs]
    assert set(proxy.faults) == set(KINDS), proxy.faults
    summaries = []
    for proc, (out, err) in zip(procs, finished, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"Traceback" not in err
        summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert sum(s["faults"] for s in summaries) > 0
    assert sum(s["succeeded"] for s in summaries) == jobs

    records = [record_of(backend, job_id) for job_id in ids]
    assert {r["status"] for r in records} == {"succeeded"}
    assert Counter(r["attempts"] for r in records) == {1: jobs}  # no delivery burned
    assert backend.hget(keys.TOTALS, keys.SUCCEEDED) == str(jobs)
    assert queue.depth(rest, Q) == {"queued": 0, "leased": 0, "delayed": 0, "dead": 0}
    assert backend.zcard(keys.schedule_key(Q)) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_faulted_claim_costs_no_delivery(
    stack: Stack, rest: RestClient, backend: valkey.Valkey, env: dict[str, str], kind: str
) -> None:
    """The first two claim-script calls are faulted; the drain resends the same call (same
    receipt) and gets the same batch, so every job runs once, on its first delivery."""
    ids = [queue.enqueue(Q, {"i": i}, client=rest) for i in range(4)]
    faulted = 0

    def plan(_index: int, body: bytes) -> str | None:
        nonlocal faulted
        if CLAIM.sha.encode() in body and faulted < 2:
            faulted += 1
            return kind
        return None

    runs: Counter[str] = Counter()
    with FaultProxy(stack.url, plan=plan, hold_s=0.8) as proxy:
        client = RestClient(proxy.url, stack.token, timeout_s=0.5)
        summary = drain(
            client,
            lambda job: runs.update([job.id]),
            lambda: 20_000,
            policy=QueuePolicy(lease_ms=10_000),
            options=DrainOptions(idle_exit_ms=300, poll_interval_ms=20, safety_margin_ms=0),
        )
        client.close()
    assert proxy.faults[kind] == 2
    assert summary.faults >= 2 and summary.succeeded == 4
    assert runs == dict.fromkeys(ids, 1)
    assert [record_of(backend, i)["attempts"] for i in ids] == [1, 1, 1, 1]
    assert queue.depth(rest, Q)["leased"] == 0


def test_two_healthy_drains_never_run_a_job_twice(
    stack: Stack, rest: RestClient, backend: valkey.Valkey
) -> None:
    """Slow jobs (1.2 s), short leases (2 s), batches of 5, two drains: a batch's run and
    its acknowledgement fit inside the lease counted from the claim, so no job runs twice."""
    ids = [queue.enqueue(Q, {"i": i}, client=rest) for i in range(30)]
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def slow(job: Job) -> None:
        time.sleep(1.2)
        with lock:
            runs[job.id] += 1

    summaries = []

    def one_drain() -> None:
        client = RestClient(stack.url, stack.token)
        summaries.append(
            drain(
                client,
                slow,
                lambda: 60_000,
                policy=QueuePolicy(lease_ms=2000, max_attempts=5),
                options=DrainOptions(
                    batch_size=5,
                    concurrency=5,
                    idle_exit_ms=500,
                    poll_interval_ms=50,
                    safety_margin_ms=0,
                ),
            )
        )
        client.close()

    threads = [threading.Thread(target=one_drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert runs == dict.fromkeys(ids, 1)
    assert sum(s.stale for s in summaries) == 0
    assert {record_of(backend, i)["status"] for i in ids} == {"succeeded"}
