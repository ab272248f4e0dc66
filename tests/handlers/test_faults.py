"""The HTTP API on a misbehaving network: 2xx/4xx or 503 + Retry-After, never a 500, never
two jobs for one request, and a client that retries a 503 with its key gets its one job."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
import valkey

from core import keys
from core.jobs import Job
from core.submit import _SUBMIT
from tests.conftest import Stack
from tests.handlers.helpers import TestClient, api_app, auth
from tests.support.faults import KINDS, FaultProxy

PATH = "/api/agent/rebalance"
BODY = {"targets": {"ETH": 0.5, "USDC": 0.5}}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def proxy(stack: Stack) -> Iterator[FaultProxy]:
    with FaultProxy(stack.url, hold_s=0.6) as proxy:
        yield proxy


@pytest.fixture
def client(env: dict[str, str], proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    from tests.support.caches import reset_caches

    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", proxy.url)
    monkeypatch.setenv("UPSTASH_TIMEOUT_MS", "400")
    monkeypatch.setenv("RATE_LIMIT_MAX", "1000")
    reset_caches()
    return TestClient(api_app())


def stored_ids(backend: valkey.Valkey) -> list[str]:
    return [Job.from_json(raw).id for raw in backend.lrange(keys.REQUEST_QUEUE, 0, -1)]


def assert_answer_is_allowed(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code in (200, 202, 503), response.text
    if response.status_code == 503:
        assert response.headers["retry-after"].isdigit()
        assert "Idempotency-Key" in response.json()["error"]["message"]


@pytest.mark.parametrize("kind", ["drop", "truncate", "late"])
def test_a_lost_answer_is_resent_and_answers_the_stored_job(
    client: TestClient, proxy: FaultProxy, backend: valkey.Valkey, kind: str
) -> None:
    """The submit ran but its answer was lost: the handler resends, finds the job, answers
    202 with it. One job stored, one rate-limit slot used."""
    proxy.plan = lambda index, body: kind if index == 0 and _SUBMIT.sha.encode() in body else None
    response = client.post(PATH, json=BODY, headers=auth("alice"))
    assert response.status_code == 202, response.text
    assert stored_ids(backend) == [response.json()["jobId"]]
    assert proxy.faults[kind] == 1
    log = backend.get(keys.rate_key("alice")) or ""
    assert len(log.split(",")) == 1


def test_under_random_faults_no_request_stores_two_jobs(
    client: TestClient, proxy: FaultProxy, backend: valkey.Valkey
) -> None:
    """20% faults of every kind: each answer is 202 or 503 + Retry-After; every 202 names a
    stored job; no job is stored twice; a job stored without a 202 had its answer lost twice
    (the one case where the API cannot know, and says to retry with an Idempotency-Key)."""
    proxy.rate, proxy.plan = 0.2, None
    answered: list[str] = []
    unknown = 0
    for _ in range(120):
        response = client.post(PATH, json=BODY, headers=auth("alice"))
        assert_answer_is_allowed(response)
        if response.status_code == 202:
            answered.append(response.json()["jobId"])
        else:
            unknown += 1
    stored = stored_ids(backend)
    assert len(stored) == len(set(stored))
    assert set(answered) <= set(stored)
    assert len(stored) - len(answered) <= unknown
    assert set(proxy.faults) == set(KINDS)


def test_retrying_503s_with_the_same_key_makes_exactly_one_job_each(
    client: TestClient, proxy: FaultProxy, backend: valkey.Valkey
) -> None:
    """Clients that retry every 503 with their Idempotency-Key end with one job per key,
    and the 202 names that job."""
    proxy.rate = 0.3
    answers: dict[str, str] = {}
    for n in range(30):
        key = f"order-{n}"
        for _ in range(20):
            response = client.post(PATH, json=BODY, headers={**auth("bob"), "Idempotency-Key": key})
            assert_answer_is_allowed(response)
            if response.status_code == 202:
                answers[key] = response.json()["jobId"]
                break
    assert len(answers) == 30
    stored = stored_ids(backend)
    assert Counter(stored) == Counter(answers.values())


def test_reads_under_faults_are_200_404_or_503(
    client: TestClient, proxy: FaultProxy, backend: valkey.Valkey, env: dict[str, str]
) -> None:
    """Status reads through faults of every kind: 200 or 503 + Retry-After, never a 500."""
    job_id = client.post(PATH, json=BODY, headers=auth("carol")).json()["jobId"]
    proxy.rate = 0.5
    seen = Counter()
    for _ in range(40):
        response = client.get(f"{PATH}/{job_id}", headers=auth("carol"))
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert response.headers["retry-after"].isdigit()
        else:
            assert json.loads(response.text)["jobId"] == job_id
        seen[response.status_code] += 1
    assert seen[200] > 0 and sum(proxy.faults.values()) > 0
