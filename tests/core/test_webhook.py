"""The webhook processor: signed POST, and how each answer maps to done/retry/dead.

An HTTP endpoint's faults (5xx, 429, timeouts) are produced with `respx`; the signature is
checked by recomputing it as a receiver would.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest
import respx

from core.errors import ConfigError, PermanentJobError
from core.jobs import Job
from core.processors import load_processor, webhook
from core.settings import Settings, get_settings

URL = "https://hooks.example.test/rebalance"
SECRET = "webhook-signing-secret"


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "unused")
    monkeypatch.setenv("REBALANCE_WEBHOOK_URL", URL)
    monkeypatch.setenv("REBALANCE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("REBALANCE_WEBHOOK_TIMEOUT_MS", "200")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def job() -> Job:
    return Job(
        id="a" * 32, payload={"targets": {"BTC": 0.5}}, user_id="u1", public_key="pk", attempts=2
    )


@respx.mock
async def test_the_request_is_signed_over_timestamp_and_body(configured: None) -> None:
    """A receiver holding the secret can verify the signature; the job id rides along."""
    route = respx.post(URL).mock(return_value=httpx.Response(200, json={"orders": 3}))
    assert await webhook.process(job()) == {"orders": 3}
    request = route.calls.last.request
    timestamp = request.headers["X-Rebalance-Timestamp"]
    expected = hmac.new(
        SECRET.encode(), f"{timestamp}.".encode() + request.content, hashlib.sha256
    ).hexdigest()
    assert request.headers["X-Signature"] == f"sha256={expected}"
    assert request.headers["Idempotency-Key"] == "a" * 32
    assert json.loads(request.content) == {
        "jobId": "a" * 32,
        "userId": "u1",
        "publicKey": "pk",
        "payload": {"targets": {"BTC": 0.5}},
        "attempt": 2,
    }


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
@respx.mock
async def test_client_errors_are_permanent(configured: None, status: int) -> None:
    respx.post(URL).mock(return_value=httpx.Response(status))
    with pytest.raises(PermanentJobError, match=str(status)):
        await webhook.process(job())


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
@respx.mock
async def test_server_errors_and_throttling_are_retried(configured: None, status: int) -> None:
    respx.post(URL).mock(return_value=httpx.Response(status))
    with pytest.raises(webhook.WebhookRetryableError):
        await webhook.process(job())


@respx.mock
async def test_a_timeout_is_retried(configured: None) -> None:
    respx.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(webhook.WebhookRetryableError, match="ReadTimeout"):
        await webhook.process(job())


@respx.mock
async def test_a_non_json_success_is_done_without_result(configured: None) -> None:
    respx.post(URL).mock(return_value=httpx.Response(204))
    assert await webhook.process(job()) is None


def test_a_missing_secret_fails_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the webhook processor without its settings is a ConfigError naming them."""
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "unused")
    monkeypatch.delenv("REBALANCE_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("REBALANCE_WEBHOOK_SECRET", raising=False)
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as caught:
        load_processor("core.processors.webhook:process")
    assert set(caught.value.problems) == {"REBALANCE_WEBHOOK_URL", "REBALANCE_WEBHOOK_SECRET"}
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "spec",
    [
        "core.processors.simulated:missing",
        "nope.nope:process",
        "core.processors.simulated:SimulatedFailure.x",
    ],
)
def test_bad_processor_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="REBALANCE_PROCESSOR"):
        load_processor(spec)


def test_check_config_accepts_a_full_configuration() -> None:
    settings = Settings.from_env(
        {
            "UPSTASH_REDIS_REST_URL": "http://x",
            "UPSTASH_REDIS_REST_TOKEN": "t",
            "REBALANCE_WEBHOOK_URL": URL,
            "REBALANCE_WEBHOOK_SECRET": "s",
        }
    )
    assert webhook.check_config(settings) is None
