"""`POST /api/agent/rebalance` over the real stack: 202, limits, idempotency, round trips."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import keys
from core.jobs import Job
from devstack.lambda_events import LambdaContext, apigw_event
from tests.bodies import rebalance, stored
from tests.handlers.helpers import TestClient, api_app, auth, body_of

PATH = "/api/agent/rebalance"


@pytest.fixture
def client(env: dict[str, str]) -> TestClient:
    return TestClient(api_app())


def test_submit_answers_202_and_stores_the_job(client: TestClient, backend) -> None:
    """202 with jobId/status/statusUrl, Location = statusUrl, the job queued for the user."""
    response = client.post(PATH, json=rebalance(portfolio="p1"), headers=auth("alice"))
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"jobId", "status", "statusUrl"}
    assert body["status"] == "queued"
    assert body["statusUrl"] == f"{PATH}/{body['jobId']}" == response.headers["location"]
    job = Job.from_json(backend.lindex(keys.REQUEST_QUEUE, 0))
    assert (job.id, job.user_id, job.public_key, job.payload) == (
        body["jobId"],
        "alice",
        "pk-alice",
        stored(rebalance(portfolio="p1")),
    )
    assert response.headers["x-request-id"]


def test_status_url_answers_for_the_new_job(client: TestClient, backend) -> None:
    """Following statusUrl gives the queued job."""
    status_url = client.post(PATH, json=rebalance(), headers=auth()).json()["statusUrl"]
    response = client.get(status_url, headers=auth())
    assert response.status_code == 200
    assert response.json()["status"] == "queued"


def test_fifty_concurrent_submits_accept_exactly_ten(client: TestClient, backend) -> None:
    """50 concurrent submits of one user: exactly 10 accepted and stored, 40 told to wait."""
    headers = auth("burst")

    def one(i: int) -> tuple[int, str | None]:
        response = client.post(PATH, json=rebalance(i=i), headers=headers)
        return response.status_code, response.headers.get("retry-after")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    statuses = [status for status, _ in results]
    assert statuses.count(202) == 10 and statuses.count(429) == 40
    assert all(1 <= int(retry) <= 60 for status, retry in results if status == 429)
    assert backend.llen(keys.REQUEST_QUEUE) == 10
    assert len(backend.keys(keys.JOB_KEY_PREFIX + "*")) == 10
    assert client.post(PATH, json=rebalance(), headers=auth("bystander")).status_code == 202


def test_rate_limited_answer(client: TestClient, backend) -> None:
    """The 11th request in a minute is a 429 with the error body and a Retry-After."""
    for _ in range(10):
        assert client.post(PATH, json=rebalance(), headers=auth()).status_code == 202
    response = client.post(PATH, json=rebalance(), headers=auth())
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 55 <= int(response.headers["retry-after"]) <= 60


def test_idempotent_replay_returns_the_same_answer(client: TestClient, backend) -> None:
    """Same Idempotency-Key and body: same status and body, one job in the queue."""
    headers = {**auth(), "Idempotency-Key": "order-42"}
    first = client.post(PATH, json=rebalance(a=1), headers=headers)
    again = client.post(PATH, json=rebalance(a=1), headers=headers)
    assert (
        (again.status_code, again.json())
        == (first.status_code, first.json())
        == (202, first.json())
    )
    assert again.headers["location"] == first.headers["location"]
    assert backend.llen(keys.REQUEST_QUEUE) == 1


def test_idempotency_key_reused_with_another_body_is_422(client: TestClient, backend) -> None:
    """The same key with a different body is refused, nothing new is queued."""
    headers = {**auth(), "Idempotency-Key": "order-42"}
    client.post(PATH, json=rebalance(a=1), headers=headers)
    response = client.post(PATH, json=rebalance(a=2), headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert backend.llen(keys.REQUEST_QUEUE) == 1


def test_another_users_identical_key_is_another_job(client: TestClient, backend) -> None:
    """Idempotency keys are scoped to their user."""
    a = client.post(PATH, json=rebalance(), headers={**auth("a"), "Idempotency-Key": "k"}).json()
    b = client.post(PATH, json=rebalance(), headers={**auth("b"), "Idempotency-Key": "k"}).json()
    assert a["jobId"] != b["jobId"]


@pytest.mark.parametrize("user_id", ["a:b:*", "new\nline", "?" * 1000, "ключ"])
def test_arbitrary_user_ids_submit_and_read(client: TestClient, backend, user_id: str) -> None:
    """Colons, globs, newlines and long ids work end to end."""
    response = client.post(PATH, json=rebalance(), headers=auth(user_id))
    assert response.status_code == 202
    assert client.get(response.json()["statusUrl"], headers=auth(user_id)).status_code == 200
    assert backend.exists(keys.rate_key(user_id))


def test_one_round_trip_per_submit(client: TestClient, stack, backend) -> None:
    """Accepted, rate-limited and replayed submits each make exactly one REST request."""
    client.post(PATH, json=rebalance(), headers=auth("warm-up"))  # loads the script if needed
    attempts = [({"Idempotency-Key": "k"}, 202), ({"Idempotency-Key": "k"}, 202)]
    attempts += [({}, 202)] * 9 + [({}, 429), ({"Idempotency-Key": "k"}, 202)]
    for extra, expected in attempts:
        stack.server.reset_count()
        response = client.post(PATH, json=rebalance(x=1), headers={**auth(), **extra})
        assert response.status_code == expected
        assert stack.server.request_count == 1


def test_lambda_event_through_the_handler(env: dict[str, str], backend) -> None:
    """A raw API Gateway v2 event through `handler` answers 202, again and again (warm)."""
    from handlers.submit import handler

    for i in range(3):
        event = apigw_event(
            "POST",
            PATH,
            body=json.dumps(rebalance(i=i)),
            headers={**auth(), "Content-Type": "application/json"},
        )
        context = LambdaContext()
        response = handler(event, context)
        assert response["statusCode"] == 202, response
        body = body_of(response)
        assert response["headers"]["location"] == body["statusUrl"]
        assert response["headers"]["x-request-id"] == context.aws_request_id
    assert backend.llen(keys.REQUEST_QUEUE) == 3


def test_lambda_event_with_authorizer_claims(env: dict[str, str], backend, monkeypatch) -> None:
    """With AUTH_TRUST_AUTHORIZER the JWT authorizer's claims in the event are the caller."""
    from core.settings import get_settings
    from handlers.submit import handler

    monkeypatch.setenv("AUTH_TRUST_AUTHORIZER", "true")
    get_settings.cache_clear()
    event = apigw_event(
        "POST",
        PATH,
        body=json.dumps(rebalance()),
        headers={"Content-Type": "application/json"},
        claims={"sub": "from-authorizer", "publicKey": "pk"},
    )
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 202, response
    assert Job.from_json(backend.lindex(keys.REQUEST_QUEUE, 0)).user_id == "from-authorizer"
    unauthorized = handler(
        apigw_event(
            "POST",
            PATH,
            body=json.dumps(rebalance()),
            headers={**auth(), "Content-Type": "application/json"},
        ),
        LambdaContext(),
    )
    assert unauthorized["statusCode"] == 401


def test_request_logs_carry_the_lambda_request_id_and_no_token(
    env: dict[str, str], backend
) -> None:
    """The per-request log line names the Lambda request id; the bearer token never appears."""
    import io
    import logging

    from core.log import JsonFormatter
    from handlers.submit import handler

    stream = io.StringIO()
    log_handler = logging.StreamHandler(stream)
    log_handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("handlers.http")
    logger.addHandler(log_handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        headers = {**auth(), "Content-Type": "application/json"}
        context = LambdaContext()
        answer = handler(
            apigw_event("POST", PATH, body=json.dumps(rebalance()), headers=headers), context
        )
    finally:
        logger.removeHandler(log_handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    request_line = next(line for line in lines if line["event"] == "http.request")
    assert request_line["request_id"] == context.aws_request_id
    assert request_line["status"] == 202
    assert request_line["job_id"] == json.loads(answer["body"])["jobId"]
    assert headers["Authorization"].split()[1] not in stream.getvalue()


def test_a_bad_body_is_a_422_naming_each_field_and_stores_nothing(
    client: TestClient, backend
) -> None:
    """Each bad field once in `details`, with its location and a reason; nothing reaches Redis."""
    body = {"targets": {"BTC": 0.5, "bad asset": 0.5}, "dryRun": "yes", "slippageBps": 1.5}
    response = client.post(PATH, json={**body, "surprise": True}, headers=auth())
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["loc"] for d in error["details"]] == [
        ["targets", "bad asset"],
        ["slippageBps"],
        ["dryRun"],
        ["surprise"],
    ]
    assert all(isinstance(d["msg"], str) and d["msg"] for d in error["details"])
    assert "surprise" in error["message"] and "dryRun" in error["message"]
    assert backend.keys("*") == []


def test_the_processor_gets_the_validated_request(client: TestClient, backend) -> None:
    """The stored payload is the request in its wire names, defaults filled in."""
    body = {"targets": {"SOL": 1}, "validForSeconds": 30, "metadata": {"agent": "a-7"}}
    assert client.post(PATH, json=body, headers=auth()).status_code == 202
    job = Job.from_json(backend.lindex(keys.REQUEST_QUEUE, 0))
    assert job.payload == {
        "targets": {"SOL": 1.0},
        "slippageBps": None,
        "dryRun": False,
        "validForSeconds": 30,
        "metadata": {"agent": "a-7"},
    }


def test_equivalent_bodies_replay_under_one_idempotency_key(client: TestClient, backend) -> None:
    """`1` and `1.0`, a default spelled out or left out: the same request, the same job."""
    headers = {**auth(), "Idempotency-Key": "same"}
    first = client.post(PATH, json={"targets": {"SOL": 1}}, headers=headers)
    again = client.post(
        PATH, json={"dryRun": False, "targets": {"SOL": 1.0}, "metadata": {}}, headers=headers
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["jobId"] == again.json()["jobId"]
    assert backend.llen(keys.REQUEST_QUEUE) == 1
