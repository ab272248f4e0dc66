"""Fuzzing the API from its OpenAPI document over the real stack: never a 5xx.

Schemathesis generates valid (positive) and invalid (negative) requests for every operation
of `handlers.openapi`; they run against the composed app (metrics, submit, status) backed by
the real gateway and Valkey. Positive cases must also answer as documented (status code and
body schema). Bounded: a fixed number of examples per operation and mode (~seconds).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import get_settings
from handlers import _web, metrics, status, submit
from handlers.openapi import build_openapi
from tests.handlers.helpers import token

EXAMPLES = 100  # per operation and mode: 7 x 100 = 700 requests, ~15 s


@pytest.fixture
def schema(env: dict[str, str], monkeypatch):
    import schemathesis

    # Generous limits so that positive cases reach the enqueue and read paths, not the 429.
    monkeypatch.setenv("RATE_LIMIT_MAX", "100000")
    monkeypatch.setenv("READ_RATE_LIMIT_MAX", "100000")
    get_settings.cache_clear()
    loaded = schemathesis.openapi.from_dict(build_openapi())
    loaded.app = _web.create_app([*metrics.routes, *submit.routes, *status.routes])
    return loaded


def _headers(operation_id: str) -> dict[str, str]:
    if operation_id == "getRebalancePrometheus":
        return {"Authorization": f"Bearer {os.environ['METRICS_SCRAPE_TOKEN']}"}
    # An operator's token, so that the summary is read rather than refused with a 403.
    return {"Authorization": f"Bearer {token('fuzzer', scope='metrics:read')}"}


# Status, cancel and Prometheus take no input beyond the (fixed) credentials and a free-form path
# segment, so there is nothing to make invalid: they are fuzzed with valid inputs only.
CASES = [
    ("submitRebalance", "positive"),
    ("submitRebalance", "negative"),
    ("getRebalanceStatus", "positive"),
    ("cancelRebalance", "positive"),
    ("getRebalanceMetrics", "positive"),
    ("getRebalanceMetrics", "negative"),
    ("getRebalancePrometheus", "positive"),
]


@pytest.mark.parametrize(("operation_id", "mode"), CASES)
def test_no_server_errors(schema, backend, operation_id: str, mode: str) -> None:
    """No generated request, valid or not, gets a 5xx; valid ones answer as documented."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        response_schema_conformance,
        status_code_conformance,
    )

    operation = next(
        op.ok()
        for op in schema.get_all_operations()
        if op.ok().definition.raw.get("operationId") == operation_id
    )
    generation = GenerationMode(mode)
    checks = [not_a_server_error]
    if generation is GenerationMode.POSITIVE:
        checks += [status_code_conformance, response_schema_conformance]
    strategy = operation.as_strategy(generation_mode=generation, headers=_headers(operation_id))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, _=st.just(None))
    def run(case, _) -> None:
        response = case.call()
        seen.add(response.status_code)
        assert response.status_code < 500, (response.status_code, response.text)
        case.validate_response(response, checks=checks)

    seen: set[int] = set()
    run()
    if generation is GenerationMode.POSITIVE and operation_id == "submitRebalance":
        assert 202 in seen  # the fuzz reached the enqueue path, not only the edges
    if generation is GenerationMode.POSITIVE and operation_id == "getRebalanceMetrics":
        assert seen == {200}  # the summary itself, not a refusal
