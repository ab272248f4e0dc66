"""The hostile battery over HTTP: operator-only metrics, read limits, redacted status bodies,
JWKS tokens of every shape. Real stack; a 5xx only for an unavailable dependency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from core import keys, queue
from core.auth import mint_token
from core.queue import Outcome, QueuePolicy
from core.redis import RestClient
from core.settings import get_settings
from tests.bodies import rebalance
from tests.handlers.helpers import TestClient, auth, token

PATH = "/api/agent/rebalance"
SUMMARY = "/api/agent/rebalance/metrics"
Q = keys.REQUEST_QUEUE


@pytest.fixture
def client(env: dict[str, str]) -> TestClient:
    from handlers import _web, metrics, status, submit

    return TestClient(_web.create_app([*metrics.routes, *submit.routes, *status.routes]))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the read limit for the test: `reads(3)`."""

    def set_limit(limit: int, window_s: int = 60) -> None:
        monkeypatch.setenv("READ_RATE_LIMIT_MAX", str(limit))
        monkeypatch.setenv("READ_RATE_LIMIT_WINDOW_S", str(window_s))
        get_settings.cache_clear()

    yield set_limit
    get_settings.cache_clear()


def _submit(client: TestClient, user: str = "alice") -> str:
    response = client.post(PATH, json=rebalance(), headers=auth(user))
    assert response.status_code == 202
    return response.json()["jobId"]


# --- the metrics summary is for operators -------------------------------------------------


@pytest.mark.parametrize(
    "claims", [{}, {"scope": "metrics:write"}, {"scope": "metrics:readonly"}, {"scp": "x"}]
)
def test_the_summary_without_the_scope_is_403(client: TestClient, claims: dict[str, Any]) -> None:
    response = client.get(SUMMARY, headers=auth("user", **claims))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("claims", [{"scope": "openid metrics:read"}, {"scp": ["metrics:read"]}])
def test_the_summary_with_the_scope_is_200(
    client: TestClient, backend, claims: dict[str, Any]
) -> None:
    response = client.get(SUMMARY, headers=auth("operator", **claims))
    assert response.status_code == 200 and "totalJobs" in response.json()


def test_the_scope_is_a_setting(client: TestClient, backend, monkeypatch) -> None:
    """METRICS_READ_SCOPE names the scope; the default one then no longer opens the route."""
    monkeypatch.setenv("METRICS_READ_SCOPE", "ops")
    get_settings.cache_clear()
    assert client.get(SUMMARY, headers=auth("op", scope="ops")).status_code == 200
    assert client.get(SUMMARY, headers=auth("op", scope="metrics:read")).status_code == 403


# --- per-user read limits -----------------------------------------------------------------


def test_status_reads_are_limited_per_user(client: TestClient, backend, reads) -> None:
    """The 4th read in the window is a 429 with Retry-After; others and submits go on."""
    job_id = _submit(client)
    reads(3)
    for _ in range(3):
        assert client.get(f"{PATH}/{job_id}", headers=auth()).status_code == 200
    limited = client.get(f"{PATH}/{job_id}", headers=auth())
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    unknown = client.get(f"{PATH}/{'0' * 32}", headers=auth())
    assert unknown.status_code == 429  # unknown ids cost a lookup too
    assert client.get(f"{PATH}/{job_id}", headers=auth("bob")).status_code == 404
    assert client.post(PATH, json=rebalance(), headers=auth()).status_code == 202


def test_status_reads_and_summaries_share_the_read_budget(
    client: TestClient, backend, reads
) -> None:
    job_id = _submit(client, "op")
    reads(2)
    assert client.get(SUMMARY, headers=auth("op", scope="metrics:read")).status_code == 200
    assert client.get(f"{PATH}/{job_id}", headers=auth("op")).status_code == 200
    response = client.get(SUMMARY, headers=auth("op", scope="metrics:read"))
    assert response.status_code == 429 and "retry-after" in response.headers


def test_a_read_keeps_its_one_round_trip(client: TestClient, stack, backend, reads) -> None:
    """The limit rides on the read: one REST request per status read and per summary,
    allowed or refused."""
    job_id = _submit(client)
    reads(2)
    client.get(f"{PATH}/{job_id}", headers=auth())  # loads the script on a fresh server
    for path, headers in [
        (f"{PATH}/{job_id}", auth()),
        (SUMMARY + "?days=7", auth(scope="metrics:read")),
    ]:
        stack.server.reset_count()
        client.get(path, headers=headers)
        assert stack.server.request_count == 1


def test_a_long_poll_counts_every_round_trip(client: TestClient, stack, backend, reads) -> None:
    """Each read of `?wait=` is one entry of the log; past the limit the poll answers what it
    has (200), and the next request is the 429."""
    job_id = _submit(client)
    reads(4)
    stack.server.reset_count()
    response = client.get(f"{PATH}/{job_id}?wait=5", headers=auth())
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert stack.server.request_count == 5  # 4 reads, then the refused fifth ends the wait
    assert len(backend.get(keys.read_rate_key("alice")).split(",")) == 4
    assert client.get(f"{PATH}/{job_id}?wait=1", headers=auth()).status_code == 429


# --- what a status body may show ----------------------------------------------------------


def _settle(rest: RestClient, outcome: dict[str, Any]) -> None:
    policy = QueuePolicy()
    (job,) = queue.claim(rest, Q, 1, policy).jobs
    queue.ack(rest, Q, [Outcome(job, **outcome)], policy)


def test_last_error_is_redacted_and_bounded(
    client: TestClient, rest: RestClient, backend, env: dict[str, str]
) -> None:
    """Secrets of the configuration, bearer tokens, JWTs and URL credentials never reach the
    owner; the text is at most 1,000 characters."""
    job_id = _submit(client)
    jwt = token("someone")
    error = (
        f"ConnectError: https://user:pw-123@hooks.example/x?api_key=AKIA9 Bearer {jwt} "
        f"upstash {env['UPSTASH_REDIS_REST_TOKEN']} jwt-secret {env['AUTH_JWT_SECRET']} "
    ) + "x" * 5000
    _settle(rest, {"kind": "retry", "error": error})
    body = client.get(f"{PATH}/{job_id}", headers=auth()).json()
    assert body["status"] == "retrying"
    text = json.dumps(body)
    for secret in ("pw-123", "AKIA9", jwt, env["UPSTASH_REDIS_REST_TOKEN"], env["AUTH_JWT_SECRET"]):
        assert secret not in text
    assert body["lastError"].startswith("ConnectError: https://user:***@hooks.example/x?api_key=")
    assert len(body["lastError"]) == 1000


def test_result_is_redacted_and_bounded(
    client: TestClient, rest: RestClient, backend, env: dict[str, str]
) -> None:
    """Credential-named fields are masked, secrets in values replaced; an oversized result is
    left out and flagged."""
    small, big = _submit(client), _submit(client)
    _settle(
        rest,
        {
            "kind": "ok",
            "result": {"orders": 3, "apiToken": "t-1", "note": f"Bearer {token()}"},
        },
    )
    body = client.get(f"{PATH}/{small}", headers=auth()).json()
    assert body["result"] == {"orders": 3, "apiToken": "***", "note": "Bearer ***"}
    _settle(rest, {"kind": "ok", "result": {"fills": ["x" * 100] * 100}})
    body = client.get(f"{PATH}/{big}", headers=auth()).json()
    assert "result" not in body and body["resultTruncated"] is True


# --- JWKS tokens through the HTTP edge: 401, never 5xx ------------------------------------


def test_jwks_tokens_of_every_shape_are_401_over_http(
    client: TestClient, backend, monkeypatch
) -> None:
    """Hostile headers against a real key server: 401 each, and a matching token passes."""
    from tests.core.test_jwks import (
        ALGS,
        EC_KEY,
        KIDS,
        RSA_KEY,
        SIGNERS,
        _token,
        serving_both_keys,
        signed,
    )

    server = serving_both_keys()
    try:
        monkeypatch.setenv("AUTH_JWKS_URL", server.url)
        monkeypatch.setenv("AUTH_ISSUER", "https://issuer")
        monkeypatch.setenv("AUTH_AUDIENCE", "rebalance")
        get_settings.cache_clear()
        seen = set()
        for alg in ALGS:
            for kid in KIDS:
                for signer in SIGNERS:
                    bad = alg != "RS256" or kid != "rsa-1" or signer != "rsa"
                    bad = bad and (alg != "ES256" or kid != "ec-1" or signer != "ec")
                    if not bad:
                        continue
                    headers = {"Authorization": f"Bearer {_token(alg, kid, 'JWT', signer)}"}
                    seen.add(client.get(f"{PATH}/{'0' * 32}", headers=headers).status_code)
        assert seen == {401}
        for key, alg, kid in [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")]:
            headers = {"Authorization": f"Bearer {signed(key, alg, kid)}"}
            assert client.get(f"{PATH}/{'0' * 32}", headers=headers).status_code == 404
    finally:
        server.close()


def test_a_200_year_token_and_a_49_kb_user_id_are_401(client: TestClient, backend) -> None:
    """The issue's two cases: the lifetime and the claim size are bounded."""
    secret = get_settings().auth_jwt_secret
    ancient = mint_token("u", "pk", secret, 200 * 365 * 86_400)
    huge = mint_token("😀" * 4096, "pk", secret)
    for bearer in (ancient, huge):
        response = client.post(
            PATH, json=rebalance(), headers={"Authorization": f"Bearer {bearer}"}
        )
        assert response.status_code == 401
    assert backend.keys("*") == []
