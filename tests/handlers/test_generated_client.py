"""A client generated from `openapi.json` by openapi-python-client drives the API.

The document is the contract clients build on: this generates a Python client from the
checked-in file (no warning allowed), serves the composed API (`devstack.dev.build_app`, what
`make dev` serves) with uvicorn over real HTTP on the real stack, then submits, reads,
watches and cancels jobs with it, and parses every error the document declares.
"""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from core import keys, queue
from core.queue import Outcome, QueuePolicy
from core.redis import RestClient
from core.settings import get_settings
from handlers.openapi import build_openapi
from tests.handlers.helpers import token
from tests.support.caches import reset_caches
from tests.support.serving import serving_dev_app

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "rebalance_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, importable for the module's tests."""
    root = tmp_path_factory.mktemp("generated")
    config = root / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is used, not read
    run = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(ROOT / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(root / PACKAGE),
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture
def api_url(env: dict[str, str]) -> Iterator[str]:
    """The dev server's app on a free port, served by uvicorn in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    with serving_dev_app(sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _op(name: str) -> Any:
    """One generated operation module (`sync`, `sync_detailed`, ...)."""
    return _module(f"api.default.{name}")


def _client(generated: ModuleType, url: str, bearer: str) -> Any:
    return generated.AuthenticatedClient(base_url=url, token=bearer, timeout=httpx.Timeout(15))


def _request(generated: ModuleType, **fields: Any) -> Any:
    models = _module("models")
    return models.RebalanceRequest.from_dict({"targets": {"BTC": 0.6, "ETH": 0.4}, **fields})


def test_submit_read_and_watch_a_job(
    generated: ModuleType, api_url: str, rest: RestClient, backend
) -> None:
    """202 parsed as `Accepted`, the status as `JobStatusView`, a long poll sees it finish,
    the summary parses as `MetricsSummary` and the scrape as text."""
    models = _module("models")
    alice = _client(generated, api_url, token("alice", scope="metrics:read"))
    request = _request(generated, slippageBps=50, metadata={"agent": "a-7"})
    answer = _op("submit_rebalance").sync_detailed(
        client=alice, body=request, idempotency_key="order-1"
    )
    assert answer.status_code == 202
    accepted = answer.parsed
    assert isinstance(accepted, models.Accepted) and accepted.status == "queued"
    assert answer.headers["location"] == accepted.status_url

    status = _op("get_rebalance_status").sync(client=alice, job_id=accepted.job_id)
    assert isinstance(status, models.JobStatusView)
    assert status.status == models.JobStatusViewStatus.QUEUED and status.attempts == 0

    def drain_later() -> None:
        policy = QueuePolicy()
        jobs = queue.claim(rest, keys.REQUEST_QUEUE, 1, policy).jobs
        time.sleep(0.2)
        queue.ack(
            rest, keys.REQUEST_QUEUE, [Outcome(j, "ok", 1.0, {"fills": 2}) for j in jobs], policy
        )

    drainer = threading.Timer(0.3, drain_later)
    drainer.start()
    seen = []
    since = models.GetRebalanceStatusSince.QUEUED
    while not seen or seen[-1] != "succeeded":
        watched = _op("get_rebalance_status").sync(
            client=alice, job_id=accepted.job_id, wait=5, since=since
        )
        assert isinstance(watched, models.JobStatusView)
        seen.append(watched.status.value)
        since = models.GetRebalanceStatusSince(watched.status.value)
        assert len(seen) < 5
    drainer.join()
    assert watched.result == {"fills": 2} and watched.attempts == 1

    summary = _op("get_rebalance_metrics").sync(client=alice, days=1)
    assert isinstance(summary, models.MetricsSummary)
    assert (summary.total_jobs, summary.succeeded_jobs, summary.rate_limit.hits) == (1, 1, 1)
    second = _op("submit_rebalance").sync(client=alice, body=_request(generated, dryRun=True))
    for _ in range(2):  # cancelling a cancelled job answers 200 again
        cancelled = _op("cancel_rebalance").sync(client=alice, job_id=second.job_id)
        assert isinstance(cancelled, models.JobStatusView)
        assert cancelled.status == models.JobStatusViewStatus.CANCELLED
    again = _op("get_rebalance_status").sync(client=alice, job_id=second.job_id)
    assert again.status == models.JobStatusViewStatus.CANCELLED

    scraper = _client(generated, api_url, get_settings().metrics_scrape_token)
    scrape = _op("get_rebalance_prometheus").sync(client=scraper)
    assert isinstance(scrape, str) and "agent_rebalance_jobs_submitted_total 2.0" in scrape
    assert "agent_rebalance_jobs_cancelled_total 1.0" in scrape
    for client in (alice, scraper):
        client.get_httpx_client().close()


def _declared_errors() -> set[tuple[str, str]]:
    """(operationId, status) of every declared 4xx/5xx that our API answers itself."""
    declared = set()
    for item in build_openapi()["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if status[0] not in "45":
                    continue
                schema = response["content"]["application/json"]["schema"]
                refs = [s["$ref"] for s in schema.get("anyOf", [schema])]
                if any(r.endswith("/ErrorResponse") for r in refs):
                    declared.add((operation["operationId"], status))
    return declared


def _parse(operation_id: str, response: httpx.Response) -> Any:
    """What the generated operation makes of `response` (its own parser, as a call would)."""
    module = _module(f"api.default.{_snake(operation_id)}")
    return module._build_response(
        client=_module("client").Client(base_url="http://unused"), response=response
    ).parsed


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def test_every_declared_error_parses(
    generated: ModuleType,
    api_url: str,
    rest: RestClient,
    backend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each error status the document declares, produced for real, parses as `ErrorResponse`
    (422 with its details); API Gateway's own `{"message"}` answers parse as `GatewayMessage`."""
    models = _module("models")
    raw = httpx.Client(base_url=api_url, timeout=15)
    alice = {"Authorization": f"Bearer {token('alice')}"}
    operator = {"Authorization": f"Bearer {token('op', scope='metrics:read')}"}
    scrape = {"Authorization": f"Bearer {get_settings().metrics_scrape_token}"}
    job = "0" * 32
    json_header = {"Content-Type": "application/json"}
    body = {"targets": {"BTC": 1}}
    produced: dict[tuple[str, str], httpx.Response] = {
        ("submitRebalance", "400"): raw.post(
            "/api/agent/rebalance", content=b"{", headers={**alice, **json_header}
        ),
        ("submitRebalance", "401"): raw.post("/api/agent/rebalance", json=body),
        ("submitRebalance", "413"): raw.post(
            "/api/agent/rebalance", content=b" " * 20_000 + b"{}", headers={**alice, **json_header}
        ),
        ("submitRebalance", "415"): raw.post(
            "/api/agent/rebalance", content=b"{}", headers={**alice, "Content-Type": "text/plain"}
        ),
        ("submitRebalance", "422"): raw.post(
            "/api/agent/rebalance", json={"targets": {"BTC": 2}, "x": 1}, headers=alice
        ),
        ("getRebalanceStatus", "401"): raw.get(f"/api/agent/rebalance/{job}"),
        ("getRebalanceStatus", "404"): raw.get(f"/api/agent/rebalance/{job}", headers=alice),
        ("getRebalanceStatus", "422"): raw.get(f"/api/agent/rebalance/{job}?wait=9", headers=alice),
        ("getRebalanceMetrics", "401"): raw.get("/api/agent/rebalance/metrics"),
        ("getRebalanceMetrics", "403"): raw.get("/api/agent/rebalance/metrics", headers=alice),
        ("getRebalanceMetrics", "422"): raw.get(
            "/api/agent/rebalance/metrics?days=9", headers=operator
        ),
        ("getRebalancePrometheus", "401"): raw.get("/api/agent/rebalance/metrics/prometheus"),
    }
    produced[("cancelRebalance", "401")] = raw.delete(f"/api/agent/rebalance/{job}")
    produced[("cancelRebalance", "404")] = raw.delete(f"/api/agent/rebalance/{job}", headers=alice)
    running = raw.post("/api/agent/rebalance", json=body, headers=alice).json()["jobId"]
    queue.claim(rest, keys.REQUEST_QUEUE, 1, QueuePolicy())  # it is processing now
    produced[("cancelRebalance", "409")] = raw.delete(
        f"/api/agent/rebalance/{running}", headers=alice
    )
    for _ in range(9):
        raw.post("/api/agent/rebalance", json=body, headers=alice)
    produced[("submitRebalance", "429")] = raw.post(
        "/api/agent/rebalance", json=body, headers=alice
    )
    monkeypatch.setenv("READ_RATE_LIMIT_MAX", "1")
    get_settings.cache_clear()
    raw.get(f"/api/agent/rebalance/{job}", headers=operator)
    produced[("getRebalanceStatus", "429")] = raw.get(
        f"/api/agent/rebalance/{job}", headers=operator
    )
    produced[("getRebalanceMetrics", "429")] = raw.get(
        "/api/agent/rebalance/metrics", headers=operator
    )
    # Upstash away: every route that needs it is a 503.
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("UPSTASH_RETRIES", "0")
    monkeypatch.setenv("READ_RATE_LIMIT_MAX", "100")
    reset_caches()
    produced[("submitRebalance", "503")] = raw.post(
        "/api/agent/rebalance", json=body, headers={**alice, "Idempotency-Key": "k"}
    )
    produced[("getRebalanceStatus", "503")] = raw.get(f"/api/agent/rebalance/{job}", headers=alice)
    produced[("cancelRebalance", "503")] = raw.delete(f"/api/agent/rebalance/{job}", headers=alice)
    produced[("getRebalanceMetrics", "503")] = raw.get(
        "/api/agent/rebalance/metrics", headers=operator
    )
    produced[("getRebalancePrometheus", "503")] = raw.get(
        "/api/agent/rebalance/metrics/prometheus", headers=scrape
    )
    reset_caches()
    raw.close()

    assert set(produced) == _declared_errors()
    for (operation_id, status), response in produced.items():
        assert str(response.status_code) == status, (operation_id, status, response.text)
        parsed = _parse(operation_id, response)
        assert isinstance(parsed, models.ErrorResponse), (operation_id, status)
        assert parsed.error.code and parsed.error.message
    details = _parse("submitRebalance", produced[("submitRebalance", "422")]).error.details
    assert [d.loc for d in details] == [["targets", "BTC"], ["x"]]

    gateway = {
        "401": "Unauthorized",
        "403": "Forbidden",
        "404": "Not Found",
        "429": "Too Many Requests",
    }
    for item in build_openapi()["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if "GatewayMessage" not in str(response.get("content")):
                    continue
                answer = httpx.Response(int(status), json={"message": gateway[status]})
                parsed = _parse(operation["operationId"], answer)
                assert isinstance(parsed, models.GatewayMessage), (operation["operationId"], status)
                assert parsed.message == gateway[status]
