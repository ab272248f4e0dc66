"""One job per wallet at a time: across any number of drains, in acceptance order, with no
head-of-line blocking, and nothing stuck when a holder dies, fails for good or is cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import valkey

from core import keys, queue
from core.drain import DrainOptions, drain
from core.queue import Outcome, QueuePolicy, claim, claim_and_ack
from core.redis import RestClient
from tests.conftest import Stack
from tests.core.conftest import Q
from tests.support import recorder

POLICY = QueuePolicy(lease_ms=30_000, max_attempts=3, retry_base_ms=1, retry_max_ms=1)


def put(rest: RestClient, wallet: str, n: int) -> str:
    return queue.enqueue(Q, {"n": n}, public_key=wallet, user_id="u-" + wallet, client=rest)


def ok(jobs: list[Any]) -> list[Outcome]:
    return [Outcome(job, "ok", 1.0) for job in jobs]


def test_a_wallets_second_job_waits_and_others_fill_the_batch(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    a1, a2, b1 = put(rest, "A", 1), put(rest, "A", 2), put(rest, "B", 1)
    first = claim_and_ack(rest, Q, [], 2, POLICY)
    assert [j.id for j in first.jobs] == [a1, b1]  # a2 waits; the batch fills from B
    assert first.parked == 1
    assert claim(rest, Q, 10, POLICY).jobs == []  # A is held: a2 is not delivered
    # The ack of a1 hands the wallet to a2, which the same round trip claims.
    second = claim_and_ack(rest, Q, ok(first.jobs), 10, POLICY)
    assert [j.id for j in second.jobs] == [a2] and second.jobs[0].attempts == 1
    claim_and_ack(rest, Q, ok(second.jobs), 0, POLICY)
    assert backend.hlen(keys.busy_key(Q)) == 0
    assert backend.keys(keys.parked_prefix(Q) + "*") == []


def test_waiting_jobs_start_in_acceptance_order(rest: RestClient) -> None:
    ids = [put(rest, "W", n) for n in range(5)]
    order = []
    cycle = claim_and_ack(rest, Q, [], 10, POLICY)
    while cycle.jobs:
        order += [j.id for j in cycle.jobs]
        cycle = claim_and_ack(rest, Q, ok(cycle.jobs), 10, POLICY)
    assert order == ids


def test_a_retrying_job_keeps_its_wallet_and_an_expired_lease_comes_back_first(
    rest: RestClient,
) -> None:
    """A failure keeps the wallet (order holds); a lease that expires is delivered again
    before the wallet's next job; a dead letter frees the wallet."""
    short = QueuePolicy(lease_ms=100, max_attempts=2, retry_base_ms=1, retry_max_ms=1)
    a1, a2 = put(rest, "A", 1), put(rest, "A", 2)
    (job,) = claim(rest, Q, 10, short).jobs
    cycle = claim_and_ack(rest, Q, [Outcome(job, "retry", 1.0, error="x")], 10, short)
    assert cycle.jobs == []  # a2 still waits behind the retrying a1
    time.sleep(0.01)
    (again,) = claim(rest, Q, 10, short).jobs
    assert (again.id, again.attempts) == (a1, 2)
    time.sleep(0.15)  # its consumer died: the lease expires on the last delivery
    after = claim_and_ack(rest, Q, [], 10, short)
    assert after.dead == 1 and [j.id for j in after.jobs] == [a2]


def test_a_killed_holder_is_delivered_again_then_the_wallet_moves_on(rest: RestClient) -> None:
    short = QueuePolicy(lease_ms=100, max_attempts=5)
    a1, a2 = put(rest, "A", 1), put(rest, "A", 2)
    assert [j.id for j in claim(rest, Q, 10, short).jobs] == [a1]
    time.sleep(0.15)
    (again,) = claim(rest, Q, 10, short).jobs
    assert (again.id, again.attempts) == (a1, 2)
    cycle = claim_and_ack(rest, Q, ok([again]), 10, short)
    assert [j.id for j in cycle.jobs] == [a2]


def test_cancelling_a_waiting_job_or_its_holder_frees_the_line(rest: RestClient) -> None:
    a1, a2, a3 = put(rest, "A", 1), put(rest, "A", 2), put(rest, "A", 3)
    (holder,) = claim(rest, Q, 10, POLICY).jobs
    assert queue.cancel(rest, Q, "u-A", a2)["status"] == "cancelled"  # parked: skipped later
    cycle = claim_and_ack(rest, Q, [Outcome(holder, "retry", 1.0, error="x")], 10, POLICY)
    assert cycle.jobs == []
    assert queue.cancel(rest, Q, "u-A", a1)["status"] == "cancelled"  # retrying holder
    time.sleep(0.01)
    cycle = claim_and_ack(rest, Q, [], 10, POLICY)
    assert [j.id for j in cycle.jobs] == [] and cycle.skipped == 1  # a2 ended unstarted
    cycle = claim_and_ack(rest, Q, [], 10, POLICY)
    assert [j.id for j in cycle.jobs] == [a3]


def test_serialize_by_none_or_user(rest: RestClient) -> None:
    put(rest, "A", 1), put(rest, "A", 2)
    free = QueuePolicy(serialize_field="")
    assert len(claim(rest, Q, 10, free).jobs) == 2
    by_user = QueuePolicy(serialize_field="user_id")
    queue.enqueue(Q, {}, public_key="A", user_id="same", client=rest)
    queue.enqueue(Q, {}, public_key="B", user_id="same", client=rest)
    assert len(claim(rest, Q, 10, by_user).jobs) == 1


def overlaps_and_order(records: list[dict[str, Any]], ids: dict[str, list[str]]) -> None:
    """No two runs of one wallet overlap; each wallet's first runs follow acceptance order."""
    runs: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    starts: dict[str, float] = {}
    for r in records:
        if r["event"] == "start":
            starts[r["id"]] = r["t"]
        elif r["id"] in starts:
            runs[r["wallet"]].append((starts.pop(r["id"]), r["t"], r["id"]))
    for wallet, spans in runs.items():
        spans.sort()
        for (_, end, _), (start, _, _) in pairwise(spans):
            assert start >= end, f"two jobs of {wallet} overlapped"
        first_seen = list(dict.fromkeys(job_id for _, _, job_id in spans))
        assert first_seen == ids[wallet][: len(first_seen)]


def run_drains(stack: Stack, count: int, policy: QueuePolicy) -> float:
    started = time.monotonic()

    def one() -> None:
        client = RestClient(stack.url, stack.token)
        drain(
            client, recorder.process, lambda: 60_000, policy=policy,
            options=DrainOptions(batch_size=10, concurrency=10, idle_exit_ms=400,
                                 poll_interval_ms=20, safety_margin_ms=0),
        )  # fmt: skip
        client.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return time.monotonic() - started - 0.4  # less the idle exit


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_drains_twenty_wallets_never_overlap_and_keep_order(
    stack: Stack, rest: RestClient, backend: valkey.Valkey, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """3 drains, 20 wallets x 10 jobs of 50 ms: no wallet runs two at once, each starts its
    jobs in acceptance order, and the run takes no longer than without serialization plus
    one job's time per wallet."""
    monkeypatch.setenv("RECORD_SLEEP_MS", "50")
    wallets = [f"wallet-{w}" for w in range(20)]

    def load() -> dict[str, list[str]]:
        ids: dict[str, list[str]] = defaultdict(list)
        for n in range(10):
            for wallet in wallets:
                ids[wallet].append(put(rest, wallet, n))
        return ids

    monkeypatch.setenv("RECORD_FILE", str(tmp_path / "none.jsonl"))
    load()
    free_s = run_drains(stack, 3, QueuePolicy(serialize_field=""))
    backend.flushall()

    monkeypatch.setenv("RECORD_FILE", str(tmp_path / "wallet.jsonl"))
    ids = load()
    serial_s = run_drains(stack, 3, QueuePolicy())
    records = recorder.read(str(tmp_path / "wallet.jsonl"))
    assert sum(r["event"] == "end" for r in records) == 200
    overlaps_and_order(records, ids)
    assert serial_s <= free_s + 20 * 0.05 + 0.5, (serial_s, free_s)
    assert queue.depth(rest, Q) == {"queued": 0, "leased": 0, "delayed": 0, "dead": 0}
    assert backend.hlen(keys.busy_key(Q)) == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_drains_keep_wallets_serialized_and_lose_nothing(
    rest: RestClient, backend: valkey.Valkey, env: dict[str, str], tmp_path: Path
) -> None:
    """Rounds of three SIGKILLed drains, then one that finishes: every job succeeds once
    its wallet is free, no two runs of a wallet overlap, nothing is left held or parked."""
    wallets = [f"w{w}" for w in range(8)]
    ids: dict[str, list[str]] = defaultdict(list)
    for n in range(6):
        for wallet in wallets:
            ids[wallet].append(put(rest, wallet, n))
    record = str(tmp_path / "runs.jsonl")
    drain_env = {
        **os.environ, **env,
        "REBALANCE_PROCESSOR": "tests.support.recorder:process", "RECORD_FILE": record,
        "RECORD_SLEEP_MS": "30", "JOB_LEASE_SECONDS": "1", "JOB_MAX_ATTEMPTS": "100",
        "DRAIN_BATCH_SIZE": "5", "DRAIN_POLL_INTERVAL_MS": "20",
        "DRAIN_SAFETY_MARGIN_MS": "100", "LOG_LEVEL": "ERROR",
    }  # fmt: skip

    def spawn(extra: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "drain", "--budget-seconds", "60"],
            env={**drain_env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    for delay in (0.6, 0.9, 0.7):
        procs = [spawn({}) for _ in range(3)]
        time.sleep(delay)
        for proc in procs:
            with proc:  # waits, and closes its pipe
                proc.send_signal(signal.SIGKILL)
    time.sleep(1.1)  # every lease of a killed drain has expired
    final = spawn({"DRAIN_IDLE_EXIT_MS": "1500"})
    out, _ = final.communicate(timeout=90)
    assert final.returncode == 0 and json.loads(out.decode().splitlines()[-1])["stopReason"]

    records = recorder.read(record)
    overlaps_and_order_after_kills(records)
    all_ids = [i for wallet_ids in ids.values() for i in wallet_ids]
    statuses = {json.loads(backend.get(keys.job_key(i)))["status"] for i in all_ids}
    assert statuses == {"succeeded"}
    assert queue.depth(rest, Q) == {"queued": 0, "leased": 0, "delayed": 0, "dead": 0}
    assert backend.hlen(keys.busy_key(Q)) == 0
    assert backend.keys(keys.parked_prefix(Q) + "*") == []


def overlaps_and_order_after_kills(records: list[dict[str, Any]]) -> None:
    """Completed runs of a wallet never overlap (a killed run has no end: its process is
    gone, and its lease had to expire before the job could run again)."""
    starts: dict[str, float] = {}
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r["event"] == "start":
            starts[r["id"]] = r["t"]
        else:
            runs[r["wallet"]].append((starts[r["id"]], r["t"]))
    assert runs
    for spans in runs.values():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end
