"""The webhook processor: signed POST, how each answer maps to done/retry/dead, connections.

An HTTP endpoint's faults (5xx, 429, timeouts) are produced with `respx`; the signature is
checked by recomputing it as a receiver would. Connection reuse is counted by a real HTTP/1.1
server on a local port, behind a real drain.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import respx

from core import queue
from core.drain import DrainOptions, drain
from core.errors import ConfigError, PermanentJobError
from core.jobs import Job
from core.processors import load_processor, webhook
from core.queue import QueuePolicy
from core.redis import RestClient
from core.settings import Settings, get_settings
from devstack.lambda_events import LambdaContext
from tests.core.conftest import Q
from tests.support.caches import reset_caches

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


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
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


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint on a local port that keeps connections alive and counts them."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.lock = threading.Lock()
        self.opened = self.closed = self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def wait_all_closed(self) -> None:
        """Until every connection it accepted was closed by the client (5 s at most)."""
        deadline = time.monotonic() + 5
        while self.closed < self.opened and time.monotonic() < deadline:
            time.sleep(0.01)


class _Receive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves request after request
    timeout = 10  # a connection the client never closes ends the thread all the same
    server: Receiver

    def setup(self) -> None:
        super().setup()
        self.server.count("opened")

    def finish(self) -> None:
        super().finish()
        self.server.count("closed")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.count("requests")
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A local webhook endpoint, and the settings pointing the processor at it."""
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("REBALANCE_WEBHOOK_URL", server.url)
    monkeypatch.setenv("REBALANCE_WEBHOOK_SECRET", SECRET)
    reset_caches()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
    reset_caches()


def test_one_connection_serves_every_job_on_the_loop_and_closes_with_it(
    configured: None, receiver: Receiver
) -> None:
    """Jobs run on one event loop share a keep-alive connection; the loop's end closes it;
    the next loop opens its own."""

    async def five_jobs() -> list[object]:
        return [await webhook.process(job()) for _ in range(5)]

    assert asyncio.run(five_jobs()) == [{"ok": True}] * 5
    receiver.wait_all_closed()
    assert (receiver.requests, receiver.opened, receiver.closed) == (5, 1, 1)
    asyncio.run(five_jobs())
    receiver.wait_all_closed()
    assert (receiver.requests, receiver.opened, receiver.closed) == (10, 2, 2)
    gc.collect()
    assert len(webhook._clients) == 0  # no ended loop, nor its client, stays in memory


def test_a_drain_invocation_posts_all_its_jobs_over_one_connection(
    env: dict[str, str], rest: RestClient, receiver: Receiver, policy: QueuePolicy
) -> None:
    """Six jobs in three batches, one at a time: one TCP connection (one TLS handshake on a
    real endpoint), closed when the invocation returns."""
    for i in range(6):
        queue.enqueue(Q, {"i": i}, client=rest)
    options = DrainOptions(
        batch_size=2, concurrency=1, poll_interval_ms=20, idle_exit_ms=100, safety_margin_ms=100
    )
    remaining_ms = LambdaContext(10_000).get_remaining_time_in_millis
    summary = drain(rest, webhook.process, remaining_ms, policy=policy, options=options)
    assert (summary.succeeded, summary.batches) == (6, 3)
    receiver.wait_all_closed()
    assert (receiver.requests, receiver.opened, receiver.closed) == (6, 1, 1)


def test_the_polling_worker_posts_every_job_over_one_connection(
    env: dict[str, str], rest: RestClient, receiver: Receiver, policy: QueuePolicy
) -> None:
    """`start_polling_worker` runs its jobs on one event loop for its whole life: four jobs,
    one connection, closed when the worker stops."""
    from core.worker import start_polling_worker

    for i in range(4):
        queue.enqueue(Q, {"i": i}, client=rest)
    worker = start_polling_worker(Q, webhook.process, 10, 50, client=rest, policy=policy)
    try:
        deadline = time.monotonic() + 10
        while worker.handled < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop(5)
    assert worker.handled == 4 and not worker.running
    receiver.wait_all_closed()
    assert (receiver.requests, receiver.opened, receiver.closed) == (4, 1, 1)
