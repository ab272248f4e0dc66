"""The drain Lambda logs its summary once more as CloudWatch embedded metrics."""

from __future__ import annotations

import logging

import pytest

from core import keys, queue
from core.redis import RestClient
from handlers import drain as drain_handler
from tests.support.context import FakeContext


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
        summary = drain_handler.handler({"source": "aws.events"}, FakeContext(5000))
    (record,) = [r for r in caplog.records if r.getMessage() == "drain.metrics"]
    fields = record.fields  # type: ignore[attr-defined]
    assert summary["succeeded"] == fields["Succeeded"] == 1
    assert fields["DrainDuration"] == summary["durationMs"]
    assert fields["FunctionName"] == "agent-rebalance-test-drain"
    assert fields["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AgentRebalance"
