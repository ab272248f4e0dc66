"""`rebalance drain`, `dlq …`, `worker` and `check queue`, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import valkey

from cli.main import main
from core import keys, queue
from core.queue import Outcome, QueuePolicy
from core.redis import RestClient
from tests.support.caches import reset_caches

Q = keys.REQUEST_QUEUE


def rebalance(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_drain_prints_its_summary_last_as_one_json_line(
    rest: RestClient, env: dict[str, str], backend: valkey.Valkey
) -> None:
    for i in range(3):
        queue.enqueue(Q, {"i": i}, client=rest)
    done = rebalance(
        {
            **env,
            "REBALANCE_PROCESSOR": "core.processors.simulated:noop",
            "DRAIN_IDLE_EXIT_MS": "200",
        },
        "drain",
        "--budget-seconds",
        "10",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["succeeded"] == 3 and summary["stopReason"] == "idle"


def test_drain_stops_at_its_budget(env: dict[str, str], backend: valkey.Valkey) -> None:
    started = time.monotonic()
    done = rebalance(env, "drain", "--budget-seconds", "1", "--no-idle-exit")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["stopReason"] == "deadline" and summary["claimed"] == 0
    assert time.monotonic() - started < 30


def test_dlq_list_replay_and_purge(
    rest: RestClient, env: dict[str, str], backend: valkey.Valkey
) -> None:
    one = QueuePolicy(max_attempts=1)
    ids = [queue.enqueue(Q, {"i": i}, user_id="u", client=rest) for i in range(3)]
    jobs = queue.claim(rest, Q, 3, one).jobs
    queue.ack(rest, Q, [Outcome(j, "dead", 1.0, error="broken") for j in jobs], one)

    listed = rebalance(env, "dlq", "list")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(row["jobId"] for row in rows) == sorted(ids)
    assert {row["lastError"] for row in rows} == {"broken"}

    replayed = rebalance(env, "dlq", "replay", ids[0])
    assert replayed.returncode == 0 and "replayed 1 job(s)" in replayed.stdout
    unknown = rebalance(env, "dlq", "replay", "f" * 32)
    assert unknown.returncode == 1 and "replayed 0 job(s)" in unknown.stdout
    assert rebalance(env, "dlq", "replay").returncode == 2
    everything = rebalance(env, "dlq", "replay", "--all")
    assert "replayed 2 job(s)" in everything.stdout
    assert queue.depth(rest, Q)["queued"] == 3

    queue.ack(
        rest,
        Q,
        [Outcome(j, "dead", 1.0, error="again") for j in queue.claim(rest, Q, 3, one).jobs],
        one,
    )
    asked = rebalance(env, "dlq", "purge")
    assert asked.returncode == 2 and "would purge 3 dead job(s)" in asked.stdout
    assert backend.llen(keys.dead_key(Q)) == 3
    purged = rebalance(env, "dlq", "purge", "--yes")
    assert "purged 3 dead job(s)" in purged.stdout
    empty = rebalance(env, "dlq", "list")
    assert (empty.stdout, empty.stderr.strip()) == ("", "no dead jobs")
    assert backend.llen(keys.dead_key(Q)) == 0


def test_worker_finishes_the_job_in_hand_on_sigterm(
    rest: RestClient, env: dict[str, str], backend: valkey.Valkey
) -> None:
    """SIGTERM while a 1.5 s job runs: the job still succeeds and the worker exits 0."""
    job_id = queue.enqueue(Q, {"slow": True}, client=rest)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker"],
        env={
            **os.environ,
            **env,
            "REBALANCE_PROCESSOR": "core.processors.simulated:process",
            "SIM_LATENCY_MS": "1500",
            "DRAIN_POLL_INTERVAL_MS": "50",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not backend.hlen(keys.leased_key(Q)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.hlen(keys.leased_key(Q)) == 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "after 1 job(s)" in out
    assert json.loads(backend.get(keys.job_key(job_id)))["status"] == "succeeded"
    assert backend.hlen(keys.leased_key(Q)) == 0


def test_check_queue_passes_and_leaves_nothing_behind(
    env: dict[str, str], backend: valkey.Valkey
) -> None:
    done = rebalance(env, "check", "queue")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and done.stdout.count("PASS") >= 3
    assert backend.keys("agent:rebalance:check*") == []
    assert backend.keys("metrics:*") == []


def test_drain_returns_once_the_queue_is_idle(
    rest: RestClient, env: dict[str, str], backend: valkey.Valkey
) -> None:
    """By default a command-line drain does not sit out its whole budget on an empty queue."""
    queue.enqueue(Q, {}, client=rest)
    done = rebalance(
        {**env, "REBALANCE_PROCESSOR": "core.processors.simulated:noop"},
        "drain",
        "--budget-seconds",
        "120",
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["succeeded"], summary["stopReason"]) == (1, "idle")


@pytest.mark.parametrize(
    ("flags", "stop"), [(["--idle-exit-ms", "100"], "idle"), (["--no-idle-exit"], "deadline")]
)
def test_drain_options_reach_the_drain_as_values_not_through_the_environment(
    rest: RestClient,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    stop: str,
) -> None:
    """In process: `--idle-exit-ms` beats `DRAIN_IDLE_EXIT_MS`, `--no-idle-exit` ignores it,
    and `os.environ` is the same afterwards."""
    monkeypatch.setenv("REBALANCE_PROCESSOR", "core.processors.simulated:noop")
    monkeypatch.setenv("DRAIN_IDLE_EXIT_MS", "60000")  # longer than the budget
    monkeypatch.setenv("DRAIN_SAFETY_MARGIN_MS", "0")
    reset_caches()
    queue.enqueue(Q, {}, client=rest)
    before = dict(os.environ)
    assert main(["drain", "--budget-seconds", "3", *flags]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["succeeded"], summary["stopReason"]) == (1, stop)
    assert dict(os.environ) == before


def test_a_negative_idle_exit_option_is_refused_like_the_variable(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Options become settings through `Settings.replace`, which checks them as `from_env`
    checks the environment: exit 2 naming the variable, nothing drained."""
    reset_caches()
    assert main(["drain", "--idle-exit-ms", "-5"]) == 2
    err = capsys.readouterr().err
    assert "DRAIN_IDLE_EXIT_MS" in err and "negative" in err


def test_bad_settings_and_outages_are_one_line_not_a_traceback(env: dict[str, str]) -> None:
    """A bad processor exits 2 naming the variable; an unreachable Upstash exits 1."""
    bad = rebalance({**env, "REBALANCE_PROCESSOR": "nope:process"}, "drain")
    assert bad.returncode == 2 and "REBALANCE_PROCESSOR" in bad.stderr
    assert "Traceback" not in bad.stderr
    down = rebalance(
        {**env, "UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9", "UPSTASH_RETRIES": "0"},
        "dlq",
        "list",
    )
    assert down.returncode == 1 and "Upstash" in down.stderr
    assert "Traceback" not in down.stderr
