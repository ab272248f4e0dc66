"""`GET /api/agent/rebalance/{jobId}` over the real stack: owner only, one round trip."""

from __future__ import annotations

import pytest

from devstack.lambda_events import LambdaContext, apigw_event
from tests.bodies import rebalance
from tests.handlers.helpers import TestClient, api_app, auth, body_of

PATH = "/api/agent/rebalance"


@pytest.fixture
def client(env: dict[str, str]) -> TestClient:
    return TestClient(api_app())


def _submit(client: TestClient, user: str = "alice") -> str:
    return client.post(PATH, json=rebalance(a=1), headers=auth(user)).json()["jobId"]


def test_owner_reads_the_status(client: TestClient, backend) -> None:
    """The owner gets the design's status body."""
    job_id = _submit(client)
    response = client.get(f"{PATH}/{job_id}", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"jobId", "status", "attempts", "createdAt", "updatedAt"}
    assert (body["jobId"], body["status"], body["attempts"]) == (job_id, "queued", 0)
    assert body["createdAt"].endswith("Z")


def test_another_users_job_is_404_like_an_unknown_one(client: TestClient, backend) -> None:
    """Anyone but the owner gets exactly the 404 an unknown or malformed id gets."""
    job_id = _submit(client, "alice")
    foreign = client.get(f"{PATH}/{job_id}", headers=auth("mallory"))
    unknown = client.get(f"{PATH}/{'0' * 32}", headers=auth("mallory"))
    malformed = client.get(f"{PATH}/not-a-job", headers=auth("mallory"))
    assert foreign.status_code == unknown.status_code == malformed.status_code == 404
    assert foreign.json() == unknown.json() == malformed.json()
    assert foreign.json()["error"]["code"] == "not_found"
    assert foreign.content == unknown.content


def test_status_needs_a_token(client: TestClient, backend) -> None:
    """No token, no status."""
    job_id = _submit(client)
    response = client.get(f"{PATH}/{job_id}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_one_round_trip_per_status_read(client: TestClient, stack, backend) -> None:
    """A status read makes exactly one REST request (found, foreign or unknown)."""
    job_id = _submit(client)
    for user, candidate in [("alice", job_id), ("bob", job_id), ("alice", "f" * 32)]:
        stack.server.reset_count()
        client.get(f"{PATH}/{candidate}", headers=auth(user))
        assert stack.server.request_count == 1


def test_status_through_the_lambda_handler(client: TestClient, backend) -> None:
    """A raw API Gateway v2 event reaches the status handler; warm invocations keep working."""
    from handlers.status import handler

    job_id = _submit(client)
    for _ in range(2):
        response = handler(apigw_event("GET", f"{PATH}/{job_id}", headers=auth()), LambdaContext())
        assert response["statusCode"] == 200, response
        assert body_of(response)["jobId"] == job_id
    missing = handler(apigw_event("GET", f"{PATH}/{job_id}", headers=auth("bob")), LambdaContext())
    assert (missing["statusCode"], body_of(missing)["error"]["code"]) == (404, "not_found")


def test_a_thread_that_served_invocations_leaves_no_event_loop_open(
    client: TestClient, backend
) -> None:
    """Mangum needs a current loop per thread; the one a worker thread got is closed with the
    thread, not left to the garbage collector with its sockets open."""
    import gc
    import threading
    import warnings

    from handlers.status import handler

    job_id = _submit(client)
    answers: list[int] = []

    def serve() -> None:
        event = apigw_event("GET", f"{PATH}/{job_id}", headers=auth())
        answers.append(handler(event, LambdaContext())["statusCode"])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        worker = threading.Thread(target=serve)
        worker.start()
        worker.join(10)
        gc.collect()
    assert answers == [200]
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
