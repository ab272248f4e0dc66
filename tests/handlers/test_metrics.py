"""handlers.metrics: the summary and Prometheus routes over the real stack."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    # Starlette asks for `httpx2` under its TestClient; plain httpx still works, and the
    # warning would fail the run under `filterwarnings = error`.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from core import keys, metrics
from core.auth import mint_token
from devstack.lambda_events import LambdaContext
from tests.conftest import JWT_SECRET, SCRAPE_TOKEN

SUMMARY = "/api/agent/rebalance/metrics"
PROMETHEUS = "/api/agent/rebalance/metrics/prometheus"


@pytest.fixture
def http(env: dict[str, str]) -> Iterator[TestClient]:
    from handlers.metrics import app

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user_token(scope: str = "metrics:read") -> dict[str, str]:
    """An operator's token by default (the summary wants METRICS_READ_SCOPE)."""
    return bearer(mint_token("user-1", "pk-1", JWT_SECRET, scope=scope))


def test_summary_needs_a_valid_token(http: TestClient) -> None:
    """No token, a forged one or the scrape token: 401 with the error body."""
    for headers in (
        {},
        bearer(mint_token("u", "k", "another-secret-of-enough-bytes-xx")),
        bearer(SCRAPE_TOKEN),
    ):
        response = http.get(SUMMARY, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_summary_reports_every_field(http: TestClient) -> None:
    """The summary answers the contract's fields, over 7 days by default."""
    metrics.increment_counter(keys.SUBMITTED, 3)
    metrics.increment_counter(keys.FAILED)
    metrics.record_timings([10.0, 30.0])
    response = http.get(SUMMARY, headers=user_token())
    assert response.status_code == 200
    body = response.json()
    assert body["days"] == 7
    assert (body["totalJobs"], body["failedJobs"], body["avgExecutionTime"]) == (3, 1, 20.0)
    assert body["rateLimit"] == {"hits": 3, "blocked": 0}
    assert {
        "p95ExecutionTime",
        "succeededJobs",
        "retriedJobs",
        "deadJobs",
        "queueDepth",
        "inFlight",
        "deadLetterDepth",
        "oldestQueuedAgeSeconds",
        "p50ExecutionTime",
        "p99ExecutionTime",
    } <= set(body)


@pytest.mark.parametrize("days", ["0", "8", "-1", "1.5", "abc", "", "+3", " 3", "٣", "9" * 5000])
def test_days_out_of_range_is_422(http: TestClient, days: str) -> None:
    """`days` must be an integer from 1 to 7."""
    response = http.get(SUMMARY, params={"days": days}, headers=user_token())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_summary_is_one_round_trip_for_each_days(http: TestClient, stack: Any) -> None:
    """Every `days` from 1 to 7 costs one REST request, auth included."""
    http.get(SUMMARY, headers=user_token())  # warm the client
    for days in range(1, 8):
        stack.server.reset_count()
        response = http.get(SUMMARY, params={"days": str(days)}, headers=user_token())
        assert response.status_code == 200 and response.json()["days"] == days
        assert stack.server.request_count == 1


def test_prometheus_needs_the_scrape_token(http: TestClient) -> None:
    """No token, a user's JWT or a wrong token: 401; the scrape token: 200."""
    for headers in ({}, user_token(), bearer(SCRAPE_TOKEN + "x"), {"Authorization": "Basic x"}):
        assert http.get(PROMETHEUS, headers=headers).status_code == 401
    assert http.get(PROMETHEUS, headers=bearer(SCRAPE_TOKEN)).status_code == 200


def test_prometheus_is_closed_when_no_scrape_token_is_configured(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset METRICS_SCRAPE_TOKEN closes the route instead of opening it."""
    from core.settings import get_settings
    from handlers.metrics import app

    monkeypatch.setenv("METRICS_SCRAPE_TOKEN", "")
    get_settings.cache_clear()
    with TestClient(app) as client:
        assert client.get(PROMETHEUS, headers={"Authorization": "Bearer "}).status_code == 401
        assert client.get(PROMETHEUS, headers=bearer("anything")).status_code == 401


def test_prometheus_body_is_one_round_trip(http: TestClient, stack: Any) -> None:
    """The exposition is text format 0.0.4, read in one REST request."""
    metrics.increment_counter(keys.SUCCEEDED, 2)
    metrics.record_timings([1.5])
    stack.server.reset_count()
    response = http.get(PROMETHEUS, headers=bearer(SCRAPE_TOKEN))
    assert stack.server.request_count == 1
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "agent_rebalance_jobs_succeeded_total 2.0" in response.text
    assert 'agent_rebalance_job_duration_seconds_bucket{le="0.005"} 1.0' in response.text


def test_redis_down_is_503(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable Upstash answers 503 with Retry-After, on both routes."""
    from core.settings import get_settings
    from handlers.metrics import app

    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("UPSTASH_RETRIES", "0")
    get_settings.cache_clear()
    with TestClient(app) as client:
        for path, headers in ((SUMMARY, user_token()), (PROMETHEUS, bearer(SCRAPE_TOKEN))):
            response = client.get(path, headers=headers)
            assert response.status_code == 503 and "Retry-After" in response.headers


def test_literal_routes_win_over_the_job_id_route(env: dict[str, str]) -> None:
    """Composed before the status route, `/metrics` is the summary, not a job id."""
    from handlers import metrics as metrics_handler
    from handlers import status

    app = Starlette(routes=[*metrics_handler.routes, *status.routes])
    with TestClient(app) as client:
        response = client.get(SUMMARY, params={"days": "2"}, headers=user_token())
        assert response.status_code == 200 and response.json()["days"] == 2
        assert client.get(PROMETHEUS, headers=bearer(SCRAPE_TOKEN)).status_code == 200


def http_api_event(path: str, headers: dict[str, str], query: str = "") -> dict[str, Any]:
    """A minimal API Gateway HTTP API (payload v2) event."""
    return {
        "version": "2.0",
        "routeKey": f"GET {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "test",
            },
            "requestId": "evt-1",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }


def test_lambda_handler_serves_both_routes(env: dict[str, str]) -> None:
    """Raw HTTP API events through Mangum: summary JSON and Prometheus text."""
    from handlers.metrics import handler

    response = handler(http_api_event(SUMMARY, user_token(), "days=1"), LambdaContext())
    assert response["statusCode"] == 200
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    assert json.loads(body)["days"] == 1
    context = LambdaContext(aws_request_id="lambda-req-1")
    response = handler(http_api_event(PROMETHEUS, bearer(SCRAPE_TOKEN)), context)
    assert response["statusCode"] == 200
    assert response["headers"]["x-request-id"] == "lambda-req-1"
    response = handler(http_api_event(SUMMARY, user_token(), "days=9"), LambdaContext())
    assert response["statusCode"] == 422
