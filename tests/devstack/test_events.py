"""`make dev`'s job events WebSocket over a real socket, with a real client (`websockets`).

The dev app is served by uvicorn on a free port; the drain Lambda's handler runs in the test
with `WS_API_ENDPOINT` pointing at the app's management API stand-in, so the messages travel
the production path: claim script -> core.push -> boto3 post_to_connection -> the socket.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import valkey
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from core import keys
from core.auth import mint_token
from devstack.events import MANAGEMENT_PATH
from devstack.lambda_events import LambdaContext
from handlers import drain as drain_handler
from tests.support.serving import serving_dev_app

USER, WALLET = "dev-user", "dev-wallet"


@pytest.fixture
def dev_url(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The dev app on a free port; the drain pushes to its management API stand-in."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name, value in {
        "WS_API_ENDPOINT": url + MANAGEMENT_PATH,
        "AWS_ACCESS_KEY_ID": "dev-local",
        "AWS_SECRET_ACCESS_KEY": "dev-local",
        "DRAIN_IDLE_EXIT_MS": "200",
        "DRAIN_POLL_INTERVAL_MS": "20",
        "DRAIN_SAFETY_MARGIN_MS": "100",
        "SIM_LATENCY_MS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    drain_handler._pusher.cache_clear()
    with serving_dev_app(sock):
        yield url
    drain_handler._pusher.cache_clear()


def token(env: dict[str, str], sub: str = USER) -> str:
    return mint_token(sub, WALLET, env["AUTH_JWT_SECRET"])


def submit(url: str, bearer: str) -> str:
    answer = httpx.post(
        f"{url}/api/agent/rebalance",
        json={"targets": {"BTC": 1}},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["jobId"])


def events(url: str, job_id: str, bearer: str) -> ClientConnection:
    ws_url = url.replace("http://", "ws://") + f"/api/agent/rebalance/{job_id}/events"
    return connect(f"{ws_url}?token={bearer}", open_timeout=10)


def receive_all(socket_: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes, and its close code."""
    messages = []
    try:
        while True:
            messages.append(json.loads(socket_.recv(timeout=10)))
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None


def run_drain() -> dict[str, Any]:
    return drain_handler.handler({"source": "aws.events"}, LambdaContext(10_000))


def test_subscribe_submit_drain_receives_processing_then_succeeded(
    dev_url: str, env: dict[str, str]
) -> None:
    """First the current status, then one message per change, then a 1000 close."""
    bearer = token(env)
    job_id = submit(dev_url, bearer)
    with events(dev_url, job_id, bearer) as socket_:
        first = json.loads(socket_.recv(timeout=10))
        assert (first["jobId"], first["status"], first["attempts"]) == (job_id, "queued", 0)
        assert run_drain()["succeeded"] == 1
        messages, code = receive_all(socket_)
    assert [m["status"] for m in messages] == ["processing", "succeeded"]
    assert messages[1]["attempts"] == 1
    assert code == 1000


def test_bad_token_closes_4401_and_foreign_or_unknown_job_4404(
    dev_url: str, env: dict[str, str]
) -> None:
    """Closed before any message: 4401 for a bad token, 4404 for someone else's or no job."""
    job_id = submit(dev_url, token(env))
    for job, bearer, expected in [
        (job_id, "not-a-token", 4401),
        (job_id, token(env) + "x", 4401),
        (job_id, token(env, sub="someone-else"), 4404),
        ("0" * 32, token(env), 4404),
    ]:
        with events(dev_url, job, bearer) as socket_:
            assert receive_all(socket_) == ([], expected)


def test_a_cancel_is_pushed_and_closes_the_stream(dev_url: str, env: dict[str, str]) -> None:
    """DELETE, then the drain's next claim takes the outbox: `cancelled`, then 1000."""
    bearer = token(env)
    job_id = submit(dev_url, bearer)
    with events(dev_url, job_id, bearer) as socket_:
        assert json.loads(socket_.recv(timeout=10))["status"] == "queued"
        cancel = httpx.delete(
            f"{dev_url}/api/agent/rebalance/{job_id}",
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=10,
        )
        assert cancel.status_code == 200
        assert run_drain()["cancelled"] == 1
        messages, code = receive_all(socket_)
    assert ([m["status"] for m in messages], code) == (["cancelled"], 1000)


def test_a_closed_socket_is_forgotten(
    dev_url: str, env: dict[str, str], backend: valkey.Valkey
) -> None:
    """The client leaves: its connection and subscription are gone from Redis."""
    bearer = token(env)
    job_id = submit(dev_url, bearer)
    with events(dev_url, job_id, bearer) as socket_:
        socket_.recv(timeout=10)
        assert backend.hexists(keys.WS_SUBS, job_id) == 1
    deadline = time.monotonic() + 5
    while backend.hexists(keys.WS_SUBS, job_id):
        assert time.monotonic() < deadline, "the subscription outlived its socket"
        time.sleep(0.02)
    assert backend.keys(keys.APP + "ws:conn:*") == []


def test_the_management_stand_in_answers_gone_like_aws(dev_url: str) -> None:
    """A post to an unknown connection is AWS's 410 GoneException."""
    answer = httpx.post(f"{dev_url}{MANAGEMENT_PATH}/@connections/nobody", content=b"{}")
    assert answer.status_code == 410
    assert answer.headers["x-amzn-errortype"] == "GoneException"
