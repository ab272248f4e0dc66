"""The production WebSocket path: the `ws` function's routes from `events/`, and the drain
posting every status change with `post_to_connection` (moto captures the posts; botocore's
Stubber answers the 410 GoneException moto never raises)."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import valkey
from botocore.stub import Stubber
from moto import mock_aws
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

from core import keys, queue, subscriptions
from core.auth import Principal, mint_token
from core.drain import DrainOptions, drain
from core.push import Pusher, client_poster
from core.queue import QueuePolicy
from core.rate_limit import ReadLimit
from core.redis import RestClient, get_client
from core.settings import Settings
from core.submit import submit_job
from devstack.lambda_events import LambdaContext
from handlers import drain as drain_handler
from handlers import ws
from tests.e2e.helpers import load_event
from tests.support.aws import offline_aws

ENDPOINT = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev"
USER, WALLET = "agent-7f3a", "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"
CONNECTION = "XxTm9cOFIAMCIhw="
FAST_DRAIN = {
    "DRAIN_IDLE_EXIT_MS": "200",
    "DRAIN_POLL_INTERVAL_MS": "20",
    "DRAIN_POLL_MAX_INTERVAL_MS": "40",
    "DRAIN_SAFETY_MARGIN_MS": "100",
    "SIM_LATENCY_MS": "0",
}


@pytest.fixture
def lambda_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The stack's environment plus the drain's management endpoint, and moto for AWS."""
    for name, value in {**FAST_DRAIN, "WS_API_ENDPOINT": ENDPOINT}.items():
        monkeypatch.setenv(name, value)
    offline_aws(monkeypatch)
    drain_handler._pusher.cache_clear()  # a fresh boto3 client, made inside moto
    with mock_aws():
        yield env
    drain_handler._pusher.cache_clear()


def token(env: dict[str, str], sub: str = USER) -> str:
    return mint_token(sub, WALLET, env["AUTH_JWT_SECRET"])


def connect_event(value: str | None, connection_id: str = CONNECTION) -> dict[str, Any]:
    event = copy.deepcopy(load_event("ws-connect.json"))
    event["queryStringParameters"] = {"token": value} if value is not None else None
    event["requestContext"]["connectionId"] = connection_id
    return event


def subscribe_event(job_id: str, connection_id: str = CONNECTION) -> dict[str, Any]:
    event = copy.deepcopy(load_event("ws-subscribe.json"))
    event["body"] = json.dumps({"action": "subscribe", "jobId": job_id})
    event["requestContext"]["connectionId"] = connection_id
    return event


def submit(env: dict[str, str], sub: str = USER) -> str:
    settings = Settings.from_env(env)
    return submit_job(
        get_client(), settings, Principal(sub, WALLET), {"targets": {"BTC": 1}}
    ).job_id


def posted(connection_id: str = CONNECTION) -> list[dict[str, Any]]:
    """The messages moto received for `connection_id`, in order (moto concatenates them)."""
    connections = apigatewaymanagementapi_backends["123456789012"]["us-east-1"].connections
    key = quote(connection_id, safe="")  # moto keys them as they appear in the URL
    raw = connections[key].data.decode() if key in connections else ""
    decoder, out, at = json.JSONDecoder(), [], 0
    while at < len(raw):
        message, at = decoder.raw_decode(raw, at)
        out.append(message)
    return out


def run_drain() -> dict[str, Any]:
    return drain_handler.handler({"source": "aws.events"}, LambdaContext(10_000))


def test_subscribe_submit_drain_pushes_processing_then_succeeded(lambda_env: dict) -> None:
    """$connect, subscribe (answered `queued`), drain: moto gets processing, then succeeded."""
    job_id = submit(lambda_env)
    assert ws.handler(connect_event(token(lambda_env)), None) == {"statusCode": 200}
    answer = ws.handler(subscribe_event(job_id), None)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["status"] == "queued"
    summary = run_drain()
    assert summary["succeeded"] == 1
    messages = posted()
    assert [m["status"] for m in messages] == ["processing", "succeeded"]
    assert {m["jobId"] for m in messages} == {job_id}
    assert messages[1]["attempts"] == 1 and "updatedAt" in messages[1]


def test_connect_refuses_missing_bad_and_expired_tokens(
    lambda_env: dict, backend: valkey.Valkey
) -> None:
    """401 with the error body, and nothing stored for the connection."""
    expired = mint_token(USER, WALLET, lambda_env["AUTH_JWT_SECRET"], now=time.time() - 7200)
    for value in (None, "", "not-a-jwt", expired, token(lambda_env) + "x"):
        answer = ws.handler(connect_event(value), None)
        assert answer["statusCode"] == 401, value
        assert json.loads(answer["body"])["error"]["code"] == "unauthorized"
    assert backend.exists(keys.ws_conn_key(CONNECTION)) == 0


def test_subscribe_is_owner_only_and_needs_a_subscribe_message(lambda_env: dict) -> None:
    """Another user's job is a 404 like an unknown id; a malformed message is a 400."""
    job_id = submit(lambda_env, sub="someone-else")
    ws.handler(connect_event(token(lambda_env)), None)
    assert ws.handler(subscribe_event(job_id), None)["statusCode"] == 404
    assert ws.handler(subscribe_event("f" * 32), None)["statusCode"] == 404
    bad = subscribe_event(job_id)
    bad["body"] = "{not json"
    assert ws.handler(bad, None)["statusCode"] == 400
    stranger = subscribe_event(job_id, connection_id="NeverConnected=")
    assert ws.handler(stranger, None)["statusCode"] == 401


def test_disconnect_forgets_the_connection(lambda_env: dict, backend: valkey.Valkey) -> None:
    """After $disconnect nothing of the connection is left, and a drain posts nothing."""
    job_id = submit(lambda_env)
    ws.handler(connect_event(token(lambda_env)), None)
    ws.handler(subscribe_event(job_id), None)
    assert backend.hget(keys.WS_SUBS, job_id) == CONNECTION
    assert ws.handler(load_event("ws-disconnect.json"), None) == {"statusCode": 200}
    assert backend.exists(keys.ws_conn_key(CONNECTION)) == 0
    assert backend.hexists(keys.WS_SUBS, job_id) == 0
    assert run_drain()["succeeded"] == 1
    assert posted() == []


def test_cancel_and_expiry_are_pushed(lambda_env: dict) -> None:
    """A cancel (through the outbox) and an expiry reach moto like the drain's own changes."""
    cancelled = submit(lambda_env)
    expiring = queue.enqueue(keys.REQUEST_QUEUE, {"t": 1}, client=get_client(), user_id=USER,
                             public_key="another-wallet", now=1_000)  # fmt: skip
    raw = get_client().execute(["LINDEX", keys.REQUEST_QUEUE, 0])
    get_client().execute(
        ["LSET", keys.REQUEST_QUEUE, 0, queue.Job.from_json(raw).to_json(expires_at=2_000)]
    )
    ws.handler(connect_event(token(lambda_env)), None)
    ws.handler(subscribe_event(cancelled), None)
    ws.handler(subscribe_event(expiring), None)
    queue.cancel(get_client(), keys.REQUEST_QUEUE, USER, cancelled)
    summary = run_drain()
    assert (summary["cancelled"], summary["expired"], summary["claimed"]) == (1, 1, 0)
    by_job = {m["jobId"]: m["status"] for m in posted()}
    assert by_job == {cancelled: "cancelled", expiring: "expired"}


def test_a_gone_connection_is_forgotten_after_its_first_failed_post(
    env: dict[str, str], rest: RestClient, backend: valkey.Valkey
) -> None:
    """410 GoneException (from the Stubber): the subscription goes; the next change posts
    nothing to it, and another subscriber of the job still gets its messages."""
    job_id = submit(env)
    for connection_id in ("Gone0000000000=", "Alive000000000="):
        subscriptions.connect(rest, Principal(USER, WALLET), connection_id,
                              ReadLimit(USER, 100, 60))  # fmt: skip
        subscriptions.subscribe(rest, connection_id, job_id)
    client = boto3.client("apigatewaymanagementapi", endpoint_url=ENDPOINT,
                          region_name="us-east-1", aws_access_key_id="t",
                          aws_secret_access_key="t")  # fmt: skip
    stubber = Stubber(client)
    received: list[tuple[str, str]] = []
    real_post = client_poster(client)

    def post(connection_id: str, data: bytes) -> None:
        received.append((connection_id, json.loads(data)["status"]))
        real_post(connection_id, data)

    gone = {"ConnectionId": "Gone0000000000=", "Data": _any()}
    stubber.add_client_error("post_to_connection", "GoneException", http_status_code=410,
                             expected_params=gone)  # fmt: skip
    for _ in range(2):  # processing, then succeeded, to the live one
        stubber.add_response("post_to_connection", {},
                             {"ConnectionId": "Alive000000000=", "Data": _any()})  # fmt: skip
    forgotten: list[str] = []
    forgot = threading.Event()

    def forget(connection_id: str, job: str) -> None:
        forgotten.append(connection_id)
        subscriptions.forget(rest, connection_id, [job])
        forgot.set()

    def process(job: Any) -> None:
        forgot.wait(5)  # the job ends once the gone connection is forgotten: no race with it

    pusher = Pusher(post, forget, lanes=1)  # one lane: the stubbed answers come in order
    with stubber:
        summary = drain(rest, process, LambdaContext(10_000).get_remaining_time_in_millis,
                        policy=QueuePolicy(), options=DrainOptions(idle_exit_ms=200,
                        poll_interval_ms=20, safety_margin_ms=100), pusher=pusher)  # fmt: skip
        stubber.assert_no_pending_responses()
    assert summary.succeeded == 1
    assert forgotten == ["Gone0000000000="]
    assert received == [
        ("Gone0000000000=", "processing"),
        ("Alive000000000=", "processing"),
        ("Alive000000000=", "succeeded"),
    ]
    assert backend.hget(keys.WS_SUBS, job_id) == "Alive000000000="
    assert (pusher.sent, pusher.gone, pusher.failed) == (2, 1, 0)
    pusher.close()


def _any() -> Any:
    from botocore.stub import ANY

    return ANY


def test_an_unreachable_store_is_a_503_in_the_error_model(
    lambda_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WebSocket Lambda shares the HTTP API's status table: Upstash out of reach answers
    503 `service_unavailable`, its cause kept out of the body."""
    from tests.support.caches import reset_caches

    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("UPSTASH_RETRIES", "0")
    reset_caches()  # the next test's `env` resets them again, to its own stack
    answer = ws.handler(connect_event(token(lambda_env)), None)
    error = json.loads(answer["body"])["error"]
    assert (answer["statusCode"], error["code"]) == (503, "service_unavailable")
    assert "127.0.0.1" not in error["message"]
