"""The drain Lambda: `run_drain` takes its settings as values; the handler wraps it and logs
its summary once more as CloudWatch embedded metrics."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import pytest

from core import keys, queue
from core.redis import RestClient
from core.settings import Settings
from devstack.lambda_events import LambdaContext
from handlers import drain as drain_handler


def test_drain_logs_one_emf_line_from_its_summary(
    env: dict[str, str],
    rest: RestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One `drain.metrics` record whose values are the summary the handler returns."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "agent-rebalance-test-drain")
    monkeypatch.setenv("SIM_LATENCY_MS", "1")
    monkeypatch.setenv("DRAIN_IDLE_EXIT_MS", "100")
    monkeypatch.setenv("DRAIN_SAFETY_MARGIN_MS", "100")
    queue.enqueue(keys.REQUEST_QUEUE, {"p": 1}, user_id="u1", client=rest)
    with caplog.at_level(logging.INFO, logger="handlers.drain"):
        summary = drain_handler.handler({"source": "aws.events"}, LambdaContext(5000))
    (record,) = [r for r in caplog.records if r.getMessage() == "drain.metrics"]
    fields = record.fields  # type: ignore[attr-defined]
    assert summary["succeeded"] == fields["Succeeded"] == 1
    assert fields["DrainDuration"] == summary["durationMs"]
    assert fields["FunctionName"] == "agent-rebalance-test-drain"
    assert fields["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AgentRebalance"


def test_run_drain_takes_its_options_as_values_not_from_the_environment(
    settings: Settings, rest: RestClient
) -> None:
    """`run_drain` with its own settings returns once idle for their `drain_idle_exit_ms`,
    though the environment sets none, with no Lambda context, and leaves `os.environ` alone."""
    for i in range(3):
        queue.enqueue(keys.REQUEST_QUEUE, {"i": i}, client=rest)
    assert "DRAIN_IDLE_EXIT_MS" not in os.environ
    before = dict(os.environ)
    mine = replace(
        settings,
        drain_idle_exit_ms=100,
        drain_safety_margin_ms=0,
        rebalance_processor="core.processors.simulated:noop",
    )
    ends = time.monotonic() + 20
    summary = drain_handler.run_drain(
        mine, lambda: max(0, int((ends - time.monotonic()) * 1000)), client=rest
    )
    assert (summary["succeeded"], summary["stopReason"]) == (3, "idle")
    assert dict(os.environ) == before


def test_run_drain_talks_to_the_redis_its_settings_name(
    settings: Settings, rest: RestClient
) -> None:
    """Without `client=`, `run_drain` uses the process's client for the connection of its
    settings: settings naming an unreachable URL reach nothing, though the environment names
    a gateway with work queued; the same connection shares one client."""
    from core.redis import client_for, reset_client

    queue.enqueue(keys.REQUEST_QUEUE, {"i": 0}, client=rest)
    elsewhere = replace(
        settings,
        upstash_redis_rest_url="http://127.0.0.1:9",  # the discard port: nothing listens
        upstash_retries=0,
        drain_idle_exit_ms=0,
        drain_safety_margin_ms=0,
    )
    assert client_for(elsewhere) is client_for(replace(elsewhere, drain_batch_size=1))
    assert client_for(elsewhere) is not client_for(settings)
    ends = time.monotonic() + 1.5
    try:
        summary = drain_handler.run_drain(
            elsewhere, lambda: max(0, int((ends - time.monotonic()) * 1000))
        )
    finally:
        reset_client()
    assert summary["claimed"] == 0 and summary["faults"] >= 1
    assert queue.depth(rest, keys.REQUEST_QUEUE)["queued"] == 1


def test_the_handler_drains_as_a_scheduled_run_of_run_drain(
    env: dict[str, str], rest: RestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Lambda handler is `run_drain` with the environment's settings and the context's
    clock: a wake event makes a woken drain, which returns once idle."""
    monkeypatch.setenv("REBALANCE_PROCESSOR", "core.processors.simulated:noop")
    monkeypatch.setenv("DRAIN_SAFETY_MARGIN_MS", "100")
    queue.enqueue(keys.REQUEST_QUEUE, {"p": 1}, client=rest)
    summary = drain_handler.handler({"wake": "submit", "token": ""}, LambdaContext(20_000))
    assert (summary["succeeded"], summary["stopReason"]) == (1, "idle")
