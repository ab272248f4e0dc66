"""The error model: every row of the design's table, hostile requests, Upstash outages."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from core import keys
from core.settings import get_settings
from tests.bodies import rebalance
from tests.handlers.helpers import TestClient, api_app, auth, token
from tests.support.caches import reset_caches

PATH = "/api/agent/rebalance"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(env: dict[str, str]) -> TestClient:
    return TestClient(api_app())


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body


def _raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


def _forged() -> str:
    good = token()
    head, claims, _ = good.split(".")
    return f"{head}.{claims}.{base64.urlsafe_b64encode(b'x' * 32).rstrip(b'=').decode()}"


def _hostile() -> list[tuple[str, str, str, dict[str, Any], int]]:
    """(id, method, path, request kwargs, expected status) — built lazily: tokens need env."""
    ok = auth()
    exp = int(time.time()) + 600
    none = _raw_token({"alg": "none", "typ": "JWT"}, {"sub": "a", "publicKey": "p", "exp": exp})
    return [
        ("no token", "POST", PATH, {"json": {}}, 401),
        (
            "basic auth",
            "POST",
            PATH,
            {"json": rebalance(), "headers": {"Authorization": "Basic YTpi"}},
            401,
        ),
        (
            "empty bearer",
            "POST",
            PATH,
            {"json": rebalance(), "headers": {"Authorization": "Bearer"}},
            401,
        ),
        (
            "garbage token",
            "POST",
            PATH,
            {"json": rebalance(), "headers": {"Authorization": "Bearer x.y.z"}},
            401,
        ),
        (
            "forged signature",
            "POST",
            PATH,
            {"json": rebalance(), "headers": {"Authorization": f"Bearer {_forged()}"}},
            401,
        ),
        ("expired", "POST", PATH, {"json": rebalance(), "headers": auth(ttl_s=-10)}, 401),
        (
            "alg none",
            "POST",
            PATH,
            {"json": rebalance(), "headers": {"Authorization": f"Bearer {none}"}},
            401,
        ),
        ("not yet valid", "POST", PATH, {"json": rebalance(), "headers": auth(nbf=exp)}, 401),
        ("sub not a string", "POST", PATH, {"json": rebalance(), "headers": auth(sub=123)}, 401),
        ("empty sub", "POST", PATH, {"json": rebalance(), "headers": auth(sub="")}, 401),
        (
            "token on status",
            "GET",
            f"{PATH}/{'a' * 32}",
            {"headers": {"Authorization": "Bearer nope"}},
            401,
        ),
        ("truncated JSON", "POST", PATH, {"content": b'{"a": ', "headers": {**ok, **JSON}}, 400),
        ("empty body", "POST", PATH, {"content": b"", "headers": {**ok, **JSON}}, 400),
        ("NaN", "POST", PATH, {"content": b'{"a": NaN}', "headers": {**ok, **JSON}}, 400),
        (
            "overflowing number",
            "POST",
            PATH,
            {"content": b'{"a": 1e999}', "headers": {**ok, **JSON}},
            400,
        ),
        ("trailing slash", "POST", PATH + "/", {"json": rebalance(), "headers": ok}, 404),
        ("not UTF-8", "POST", PATH, {"content": b'{"a": "\xff"}', "headers": {**ok, **JSON}}, 400),
        (
            "lone surrogate",
            "POST",
            PATH,
            {"content": b'{"a": "\\ud800"}', "headers": {**ok, **JSON}},
            400,
        ),
        ("deep nesting", "POST", PATH, {"content": b"[" * 10_000, "headers": {**ok, **JSON}}, 400),
        ("array body", "POST", PATH, {"json": [1, 2], "headers": ok}, 422),
        ("string body", "POST", PATH, {"json": "rebalance", "headers": ok}, 422),
        ("null body", "POST", PATH, {"content": b"null", "headers": {**ok, **JSON}}, 422),
        (
            "idempotency key too long",
            "POST",
            PATH,
            {"json": rebalance(), "headers": {**ok, "Idempotency-Key": "k" * 256}},
            422,
        ),
        (
            "idempotency key non-ASCII",
            "POST",
            PATH,
            {"json": rebalance(), "headers": {**ok, "Idempotency-Key": "clé".encode("latin-1")}},
            422,
        ),
        (
            "text/plain",
            "POST",
            PATH,
            {"content": b"{}", "headers": {**ok, "Content-Type": "text/plain"}},
            415,
        ),
        ("no content type", "POST", PATH, {"content": b"{}", "headers": ok}, 415),
        ("form body", "POST", PATH, {"data": {"a": "1"}, "headers": ok}, 415),
        (
            "over the limit",
            "POST",
            PATH,
            {"content": b'{"a":"' + b"x" * 17_000 + b'"}', "headers": {**ok, **JSON}},
            413,
        ),
        (
            "over the limit, chunked",
            "POST",
            PATH,
            {"content": iter([b'{"a":"', b"x" * 17_000, b'"}']), "headers": {**ok, **JSON}},
            413,
        ),
        ("PUT", "PUT", PATH, {"json": rebalance(), "headers": ok}, 405),
        ("DELETE unknown job", "DELETE", f"{PATH}/{'a' * 32}", {"headers": ok}, 404),
        ("traversal id", "GET", f"{PATH}/..%2F..%2Fetc", {"headers": ok}, 404),
        ("glob id", "GET", f"{PATH}/*", {"headers": ok}, 404),
        ("uppercase id", "GET", f"{PATH}/{'A' * 32}", {"headers": ok}, 404),
        ("key-shaped id", "GET", f"{PATH}/agent:rebalance:request", {"headers": ok}, 404),
        ("unknown id", "GET", f"{PATH}/{'0' * 32}", {"headers": ok}, 404),
        ("unknown route", "GET", "/api/agent/other", {"headers": ok}, 404),
    ]


# Names of the cases above; the cases themselves are built per test (tokens need the env).
HOSTILE = [
    "no token",
    "basic auth",
    "empty bearer",
    "garbage token",
    "forged signature",
    "expired",
    "alg none",
    "not yet valid",
    "sub not a string",
    "empty sub",
    "token on status",
    "truncated JSON",
    "empty body",
    "NaN",
    "overflowing number",
    "trailing slash",
    "not UTF-8",
    "lone surrogate",
    "deep nesting",
    "array body",
    "string body",
    "null body",
    "idempotency key too long",
    "idempotency key non-ASCII",
    "text/plain",
    "no content type",
    "form body",
    "over the limit",
    "over the limit, chunked",
    "PUT",
    "DELETE unknown job",
    "traversal id",
    "glob id",
    "uppercase id",
    "key-shaped id",
    "unknown id",
    "unknown route",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_requests_get_their_4xx_and_store_nothing(
    client: TestClient, backend, name: str
) -> None:
    """Malformed or hostile bodies, headers, tokens, ids and methods: contracted 4xx, no key."""
    cases = {case[0]: case for case in _hostile()}
    assert sorted(cases) == sorted(HOSTILE)
    _, method, path, kwargs, status = cases[name]
    response = client.request(method, path, **kwargs)
    _error(response, status)
    reads_counted = keys.read_rate_key("alice")  # a well-formed job id is looked up: a read
    assert set(backend.keys("*")) <= {reads_counted}


def test_error_table_codes(client: TestClient, backend) -> None:
    """Each status of the table carries its documented code."""
    ok = auth()
    _error(client.post(PATH, content=b"{", headers={**ok, **JSON}), 400, "invalid_json")
    _error(client.post(PATH, json=rebalance()), 401, "unauthorized")
    _error(client.get(f"{PATH}/{'0' * 32}", headers=ok), 404, "not_found")
    _error(client.put(PATH, json=rebalance(), headers=ok), 405, "method_not_allowed")
    _error(
        client.post(PATH, content=b"{}" + b" " * 20_000, headers={**ok, **JSON}),
        413,
        "payload_too_large",
    )
    _error(client.post(PATH, content=b"{}", headers=ok), 415, "unsupported_media_type")
    _error(client.post(PATH, json=[], headers=ok), 422, "validation_error")
    for _ in range(10):
        client.post(PATH, json=rebalance(), headers=ok)
    limited = client.post(PATH, json=rebalance(), headers=ok)
    _error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1


def test_body_limit_follows_max_body_bytes(client: TestClient, backend, monkeypatch) -> None:
    """MAX_BODY_BYTES sets the limit: a body at the limit passes, one byte more is a 413."""
    monkeypatch.setenv("MAX_BODY_BYTES", "64")
    get_settings.cache_clear()
    at_limit = b'{"targets":{"BTC":1},"metadata":{"a":"' + b"x" * 23 + b'"}}'
    assert len(at_limit) == 64
    assert client.post(PATH, content=at_limit, headers={**auth(), **JSON}).status_code == 202
    _error(client.post(PATH, content=at_limit + b" ", headers={**auth(), **JSON}), 413)


# --- Upstash unreachable or stalled: 503 + Retry-After, fast, never a 202 -------------------


@pytest.fixture
def point_at(env: dict[str, str], monkeypatch) -> Iterator[Any]:
    """Re-point the process at another Upstash URL with a short timeout."""

    def apply(url: str) -> None:
        monkeypatch.setenv("UPSTASH_REDIS_REST_URL", url)
        monkeypatch.setenv("UPSTASH_TIMEOUT_MS", "300")
        reset_caches()

    yield apply
    reset_caches()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_unavailable(response: httpx.Response, started: float) -> None:
    _error(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert time.monotonic() - started < 3  # well inside any Lambda timeout
    assert "127.0.0.1" not in response.text  # the cause is logged, not sent


def test_unreachable_upstash_is_503(client: TestClient, backend, point_at) -> None:
    """Nothing listening: submit and status answer 503 with Retry-After, quickly."""
    point_at(f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    _assert_unavailable(client.post(PATH, json=rebalance(), headers=auth()), started)
    started = time.monotonic()
    _assert_unavailable(client.get(f"{PATH}/{'a' * 32}", headers=auth()), started)


def test_stalled_upstash_is_503_within_the_timeout(client: TestClient, backend, point_at) -> None:
    """A server that accepts but never answers: the call times out and the answer is a 503."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections queue up in the backlog and are never served
        point_at(f"http://127.0.0.1:{listener.getsockname()[1]}")
        started = time.monotonic()
        _assert_unavailable(client.post(PATH, json=rebalance(), headers=auth()), started)
    assert backend.llen(keys.REQUEST_QUEUE) == 0


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(500, json={"error": "ERR internal"}),
        httpx.Response(200, content=b"{not json"),
        httpx.Response(200, json={"result": None}),
        httpx.Response(200, json={"result": ["accepted"]}),
        httpx.Response(502, text="Bad Gateway"),
    ],
)
def test_broken_upstash_replies_are_503_never_202(
    client: TestClient, stack, backend, reply: httpx.Response
) -> None:
    """5xx, broken bodies and replies that do not confirm the job: 503, never a 202."""
    with respx.mock(assert_all_called=True) as mock:
        mock.post(url__startswith=stack.url).mock(return_value=reply)
        response = client.post(PATH, json=rebalance(), headers=auth())
    _error(response, 503, "service_unavailable")
    assert "retry-after" in response.headers


def test_upstash_timeout_after_sending_is_resent_once_as_a_resend_then_503(
    client: TestClient, stack, backend
) -> None:
    """A read timeout on the submit may hide a stored job: the one resend carries the same
    job id, so that a landed first call is answered instead of stored twice."""
    with respx.mock() as mock:
        route = mock.post(url__startswith=stack.url).mock(side_effect=httpx.ReadTimeout("stalled"))
        response = client.post(PATH, json=rebalance(), headers=auth())
    _error(response, 503)
    assert route.call_count == 2
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first == second  # the same job id, the same body
