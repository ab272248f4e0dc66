"""Long-running consumers outlive an outage: `rebalance worker` and `make dev`'s drain ticker
keep draining after Upstash is unreachable for 5 s and comes back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import valkey

from core import keys, queue
from core.redis import RestClient
from tests.conftest import Stack
from tests.support.faults import FaultProxy

Q = keys.REQUEST_QUEUE
OUTAGE_S = 5

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def succeeded(backend: valkey.Valkey, job_id: str) -> bool:
    raw = backend.get(keys.job_key(job_id))
    return raw is not None and json.loads(raw)["status"] == "succeeded"


def ride_out_an_outage(proxy: FaultProxy, rest: RestClient, backend: valkey.Valkey) -> None:
    """A job before, an outage with a job queued during it, a job after: all three run."""
    before = queue.enqueue(Q, {"n": 1}, client=rest)
    assert wait_for(lambda: succeeded(backend, before), 20)
    proxy.down = True
    during = queue.enqueue(Q, {"n": 2}, client=rest)  # straight to the gateway
    time.sleep(OUTAGE_S)
    assert not succeeded(backend, during)
    proxy.down = False
    assert wait_for(lambda: succeeded(backend, during), 20)
    after = queue.enqueue(Q, {"n": 3}, client=rest)
    assert wait_for(lambda: succeeded(backend, after), 20)
    assert proxy.faults["reset"] > 0


def test_the_worker_keeps_draining_after_an_outage(
    stack: Stack, rest: RestClient, env: dict[str, str], backend: valkey.Valkey
) -> None:
    """It logs each failure, backs off, resumes; SIGTERM still stops it with 0."""
    with FaultProxy(stack.url) as proxy:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            env={
                **os.environ,
                **env,
                "UPSTASH_REDIS_REST_URL": proxy.url,
                "UPSTASH_TIMEOUT_MS": "500",
                "SIM_LATENCY_MS": "1",
                "DRAIN_POLL_INTERVAL_MS": "50",
                "DRAIN_POLL_MAX_INTERVAL_MS": "200",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ride_out_an_outage(proxy, rest, backend)
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "worker.claim_failed" in err and "Traceback" not in err
    assert "after 3 job(s)" in out


def test_the_dev_ticker_keeps_draining_after_an_outage(
    stack: Stack, rest: RestClient, env: dict[str, str], backend: valkey.Valkey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from devstack.dev import Ticker
    from tests.support.caches import reset_caches

    with FaultProxy(stack.url) as proxy:
        monkeypatch.setenv("UPSTASH_REDIS_REST_URL", proxy.url)
        monkeypatch.setenv("UPSTASH_TIMEOUT_MS", "500")
        monkeypatch.setenv("DRAIN_SAFETY_MARGIN_MS", "100")
        monkeypatch.setenv("DRAIN_POLL_INTERVAL_MS", "50")
        monkeypatch.setenv("SIM_LATENCY_MS", "1")
        reset_caches()
        ticker = Ticker(0.5)
        ticker.start()
        try:
            ride_out_an_outage(proxy, rest, backend)
            assert ticker._thread.is_alive()
        finally:
            ticker.stop()
