"""The elastic drain on the dev stack: a submit wakes a drain thread at once, a backlog fans
out to more drains (never past DRAIN_MAX_PARALLEL), and they all go once idle."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import valkey

from core import elastic, keys
from core.redis import RestClient
from core.settings import Settings
from devstack.backlog import STATS, drain_backlog, wait_for
from devstack.dev import build_app, start_ticker
from tests.bodies import rebalance
from tests.handlers.helpers import TestClient, auth

Q = keys.REQUEST_QUEUE


@pytest.fixture
def configure(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """Set environment variables and re-read the settings; the waker is reset afterwards."""
    from core.settings import get_settings

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    apply(
        DRAIN_WAKE="true",
        DRAIN_FANOUT_BACKLOG="10",
        DRAIN_BATCH_SIZE="10",
        DRAIN_CONCURRENCY="10",
        DRAIN_IDLE_EXIT_MS="1000",
        DRAIN_SAFETY_MARGIN_MS="500",
    )
    STATS.reset()
    yield apply
    elastic.use_waker(None)
    get_settings.cache_clear()


@pytest.mark.timeout(120)
def test_a_backlog_fans_out_to_four_drains_and_drains_three_times_faster(
    settings: Settings, rest: RestClient, backend: valkey.Valkey
) -> None:
    """120 jobs of 1 s, concurrency 10: 4 drains (never more: 40 jobs at once at most) finish
    at least 3x sooner than 1, and none is left running or registered afterwards. The drains
    take their settings as values: the environment sets none of them."""
    assert "DRAIN_WAKE" not in os.environ
    fanning = replace(
        settings,
        drain_wake=True,
        drain_fanout_backlog=10,
        drain_batch_size=10,
        drain_concurrency=10,
        drain_idle_exit_ms=1000,
        drain_safety_margin_ms=500,
        rebalance_processor="devstack.backlog:one_second",
    )
    one = drain_backlog(rest, backend, replace(fanning, drain_max_parallel=1), 120)
    assert (one.peak_jobs, one.ticker.wakes, one.ticker.peak) == (10, 1, 1)
    four = drain_backlog(rest, backend, replace(fanning, drain_max_parallel=4), 120)
    assert four.peak_jobs == 40  # four drains of ten at once, and not one job more
    assert (four.ticker.wakes, four.ticker.peak, four.ticker.throttled) == (4, 4, 0)
    assert one.seconds / four.seconds >= 3, (one.seconds, four.seconds)
    assert not backend.exists(keys.drains_key(Q), keys.awake_key(Q))


def test_submits_start_at_once_by_waking_a_drain_not_by_the_schedule(
    configure: Callable[..., None], rest: RestClient, backend: valkey.Valkey
) -> None:
    """The schedule ticks once (nothing due) and not again for an hour; each submit into an
    idle queue wakes a drain thread, a submit while one runs does not, and every job starts
    within seconds."""
    configure(REBALANCE_PROCESSOR="devstack.backlog:instant", DRAIN_MAX_PARALLEL="4")
    ticker = start_ticker(3600)
    assert ticker is not None
    client = TestClient(build_app())
    latencies = []
    try:
        wait_for(lambda: ticker.invocations == 1, 10)  # the first tick: nothing due
        for pause in (2.5, 0.0, 0.0):  # idle long enough for the drain to go; then not
            sent = time.monotonic()
            job_id = client.post("/api/agent/rebalance", json=rebalance(), headers=auth()).json()[
                "jobId"
            ]
            wait_for(lambda job=job_id: job in STATS.started, 10)
            latencies.append(STATS.started[job_id] - sent)
            time.sleep(pause)
    finally:
        ticker.stop()
    assert ticker.wakes == 2 and ticker.invocations == 3
    assert max(latencies) < 5, latencies  # the next scheduled tick is an hour away
