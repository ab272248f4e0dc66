"""`rebalance check metrics`: the smoke test passes on the stack and fails cleanly without it."""

from __future__ import annotations

import dataclasses

import pytest
import valkey

from cli.check_metrics import SCRATCH_COUNTER, run_checks
from cli.main import main
from core import keys
from core.settings import Settings


def test_every_check_passes_on_the_stack(settings: Settings, backend: valkey.Valkey) -> None:
    """Counter, timing, summary and Prometheus checks pass; the scratch counter stays daily."""
    results = run_checks(settings)
    assert [name for name, _, _ in results] == [
        "metrics.counter",
        "metrics.timing",
        "metrics.summary",
        "metrics.prometheus",
    ]
    assert all(passed for _, passed, _ in results), results
    assert SCRATCH_COUNTER not in backend.hgetall(keys.TOTALS)


def test_unreachable_upstash_fails_every_check_without_raising(settings: Settings) -> None:
    """No server: each check reports FAIL with a reason instead of a traceback."""
    down = dataclasses.replace(
        settings, upstash_redis_rest_url="http://127.0.0.1:9", upstash_retries=0
    )
    results = run_checks(down)
    assert results and not any(passed for _, passed, _ in results)
    assert all(detail for _, _, detail in results)


def test_console_command(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """`rebalance check metrics` prints one PASS line per check and exits 0."""
    assert main(["check", "metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("PASS metrics.") for line in lines)
