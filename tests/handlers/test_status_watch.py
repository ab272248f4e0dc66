"""Watching a job live: `GET /api/agent/rebalance/{jobId}?wait=N&since=STATUS` long-polls."""

from __future__ import annotations

import threading
import time

import pytest
import valkey

from core import keys, models, queue
from core.jobs import JobStatus
from core.queue import Outcome, QueuePolicy
from core.redis import RestClient
from core.submit import MAX_WAIT_S, STATUSES, watch_status
from handlers.openapi import build_openapi
from tests.handlers.helpers import TestClient, api_app, auth

Q = keys.REQUEST_QUEUE


@pytest.fixture
def client(env: dict[str, str]) -> TestClient:
    return TestClient(api_app())


def submit(client: TestClient, sub: str = "alice") -> str:
    response = client.post("/api/agent/rebalance", json={"targets": {"BTC": 1}}, headers=auth(sub))
    assert response.status_code == 202
    return response.json()["jobId"]


def test_the_answer_comes_when_the_status_moves(
    client: TestClient, rest: RestClient, backend: valkey.Valkey
) -> None:
    """A waiting read returns `succeeded` as soon as a drain acks the job, not at the end."""
    job_id = submit(client)
    policy = QueuePolicy()

    def drain_later() -> None:
        jobs = queue.claim(rest, Q, 1, policy).jobs
        queue.ack(rest, Q, [Outcome(job, "ok", 1.0) for job in jobs], policy)

    timer = threading.Timer(0.5, drain_later)
    timer.start()
    answer = client.get(f"/api/agent/rebalance/{job_id}?wait=5&since=queued", headers=auth())
    timer.join()
    assert answer.status_code == 200
    assert answer.json()["status"] in ("processing", "succeeded")


def test_a_known_different_status_answers_at_once(client: TestClient, rest: RestClient) -> None:
    """`since` that is already out of date: one read, no waiting."""
    job_id = submit(client)
    before = rest.round_trips
    view = watch_status(
        rest, "alice", job_id, 5, since="processing", sleep=lambda _: pytest.fail("must not wait")
    )
    assert view["status"] == "queued" and rest.round_trips - before == 1


def test_a_final_status_never_waits(client: TestClient, rest: RestClient) -> None:
    job_id = submit(client)
    policy = QueuePolicy()
    queue.ack(
        rest, Q, [Outcome(j, "ok", 1.0) for j in queue.claim(rest, Q, 1, policy).jobs], policy
    )
    view = watch_status(rest, "alice", job_id, 5, sleep=lambda _: pytest.fail("must not wait"))
    assert view["status"] == "succeeded"


def test_an_unchanged_job_answers_when_the_wait_is_over(
    client: TestClient, rest: RestClient
) -> None:
    """With a fake clock: reads back off, and the last answer is the unchanged status."""
    job_id = submit(client)
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    view = watch_status(rest, "alice", job_id, 3, sleep=sleep, clock=lambda: now[0])
    assert view["status"] == "queued"
    assert sum(pauses) == pytest.approx(3)
    assert pauses[:3] == pytest.approx([0.2, 0.3, 0.45]) and max(pauses) <= 1.0


@pytest.mark.parametrize(
    "query", ["wait=6", "wait=-1", "wait=x", "wait=1.5", "since=done", "since=QUEUED"]
)
def test_bad_watch_parameters_are_422(client: TestClient, query: str) -> None:
    job_id = submit(client)
    answer = client.get(f"/api/agent/rebalance/{job_id}?{query}", headers=auth())
    assert answer.status_code == 422 and answer.json()["error"]["code"]


def test_another_users_job_is_404_even_when_waiting(client: TestClient) -> None:
    job_id = submit(client)
    answer = client.get(f"/api/agent/rebalance/{job_id}?wait=5", headers=auth("mallory"))
    assert answer.status_code == 404


def test_the_document_lists_every_status_and_the_wait_bound() -> None:
    params = build_openapi()["paths"]["/api/agent/rebalance/{jobId}"]["get"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in params}
    assert by_name["since"]["enum"] == list(STATUSES) == list(models.STATUSES)
    assert {str(s) for s in JobStatus} | {"cancelled", "expired"} == set(STATUSES)
    assert by_name["wait"]["maximum"] == MAX_WAIT_S


def test_an_expired_lease_no_longer_reads_as_processing(
    client: TestClient, rest: RestClient
) -> None:
    """A job whose consumer died shows its last durable status, not `processing` forever."""
    from core.submit import get_status

    job_id = submit(client)
    short = QueuePolicy(lease_ms=100)
    assert queue.claim(rest, Q, 1, short).jobs
    assert get_status(rest, "alice", job_id)["status"] == "processing"
    time.sleep(0.15)
    assert get_status(rest, "alice", job_id)["status"] == "queued"
