"""`DELETE /api/agent/rebalance/{jobId}` and `validForSeconds`: jobs that must not run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import valkey

from core import keys, metrics, queue
from core.drain import DrainOptions, drain
from core.queue import QueuePolicy
from core.redis import RestClient
from tests.handlers.helpers import TestClient, api_app, auth

PATH = "/api/agent/rebalance"
BODY = {"targets": {"ETH": 0.5, "USDC": 0.5}}


@pytest.fixture
def client(env: dict[str, str]) -> TestClient:
    return TestClient(api_app())


def submit(client: TestClient, user: str = "alice", **fields: Any) -> str:
    response = client.post(PATH, json={**BODY, **fields}, headers=auth(user))
    assert response.status_code == 202, response.text
    return str(response.json()["jobId"])


def drain_all(rest: RestClient, processor: Callable[[Any], Any]) -> None:
    drain(
        rest, processor, lambda: 10_000, policy=QueuePolicy(),
        options=DrainOptions(idle_exit_ms=100, poll_interval_ms=20, safety_margin_ms=0),
    )  # fmt: skip


def test_a_queued_job_is_cancelled_never_runs_and_is_counted(
    client: TestClient, rest: RestClient, backend: valkey.Valkey
) -> None:
    job_id = submit(client)
    other = submit(client)
    response = client.delete(f"{PATH}/{job_id}", headers=auth())
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["jobId"] == job_id
    again = client.delete(f"{PATH}/{job_id}", headers=auth())
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")

    ran: list[str] = []
    drain_all(rest, lambda job: ran.append(job.id))
    assert ran == [other]  # same wallet: the cancelled one did not hold the line either
    read = client.get(f"{PATH}/{job_id}", headers=auth())
    assert (read.status_code, read.json()["status"]) == (200, "cancelled")
    assert metrics.get_metrics_summary(1, client=rest)["cancelledJobs"] == 1
    assert backend.scard(keys.cancelled_key(keys.REQUEST_QUEUE)) == 0


def test_a_processing_or_finished_job_is_a_409(client: TestClient, rest: RestClient) -> None:
    job_id = submit(client)
    (claimed,) = queue.claim(rest, keys.REQUEST_QUEUE, 10, QueuePolicy()).jobs
    busy = client.delete(f"{PATH}/{job_id}", headers=auth())
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "conflict"
    queue.ack(rest, keys.REQUEST_QUEUE, [queue.Outcome(claimed, "ok", 1.0)], QueuePolicy())
    done = client.delete(f"{PATH}/{job_id}", headers=auth())
    assert done.status_code == 409
    assert client.get(f"{PATH}/{job_id}", headers=auth()).json()["status"] == "succeeded"


def test_another_users_job_and_unknown_ids_are_404(client: TestClient) -> None:
    job_id = submit(client, "alice")
    assert client.delete(f"{PATH}/{job_id}", headers=auth("mallory")).status_code == 404
    assert client.delete(f"{PATH}/{'0' * 32}", headers=auth("alice")).status_code == 404
    assert client.delete(f"{PATH}/not-an-id", headers=auth("alice")).status_code == 404
    assert client.delete(f"{PATH}/{job_id}").status_code == 401
    assert client.get(f"{PATH}/{job_id}", headers=auth("alice")).json()["status"] == "queued"


def test_a_retrying_job_is_cancelled_at_once(client: TestClient, rest: RestClient) -> None:
    job_id = submit(client)
    (claimed,) = queue.claim(rest, keys.REQUEST_QUEUE, 10, QueuePolicy()).jobs
    failure = queue.Outcome(claimed, "retry", 1.0, error="exchange down")
    queue.ack(rest, keys.REQUEST_QUEUE, [failure], QueuePolicy(retry_base_ms=1, retry_max_ms=1))
    response = client.delete(f"{PATH}/{job_id}", headers=auth())
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    time.sleep(0.01)
    assert queue.depth(rest, keys.REQUEST_QUEUE) == {
        "queued": 0, "leased": 0, "delayed": 0, "dead": 0,
    }  # fmt: skip


def test_a_job_past_its_valid_for_seconds_expires_without_reaching_the_processor(
    client: TestClient, rest: RestClient, backend: valkey.Valkey
) -> None:
    """validForSeconds 1 behind a stopped drain: `expired`, never run, not dead-lettered,
    counted; a job of the same wallet behind it still runs."""
    stale = submit(client, validForSeconds=1)
    fresh = submit(client, validForSeconds=60)
    time.sleep(1.1)
    ran: list[str] = []
    drain_all(rest, lambda job: ran.append(job.id))
    assert ran == [fresh]
    body = client.get(f"{PATH}/{stale}", headers=auth()).json()
    assert body["status"] == "expired" and body["attempts"] == 0
    assert backend.llen(keys.dead_key(keys.REQUEST_QUEUE)) == 0
    assert metrics.get_metrics_summary(1, client=rest)["expiredJobs"] == 1


def test_job_valid_for_s_is_the_default_window(
    rest: RestClient, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.caches import reset_caches

    monkeypatch.setenv("JOB_VALID_FOR_S", "1")
    reset_caches()
    client = TestClient(api_app())
    job_id = submit(client)
    time.sleep(1.1)
    ran: list[str] = []
    drain_all(rest, lambda job: ran.append(job.id))
    assert ran == []
    assert client.get(f"{PATH}/{job_id}", headers=auth()).json()["status"] == "expired"
