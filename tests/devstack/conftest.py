"""Fixtures for the gateway conformance suite: SDK clients in both encodings, raw HTTP.

Everything goes to the session's real gateway and real Valkey (`stack`, `backend` from the
root conftest); a second gateway with a small request cap and a read-only token covers the
options a shared gateway cannot change.

Contract run: with `UPSTASH_CONTRACT_URL` and `UPSTASH_CONTRACT_TOKEN` set, every test that
talks only through the SDK fixtures (`redis`, `aredis`) also runs against that real Upstash
database, so the emulator's claims can be checked. That database is FLUSHED before each
test: use a scratch one. Tests that read the backing server directly, or are marked
`gateway_only`, run against the gateway alone.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import valkey
from upstash_redis import Redis
from upstash_redis.asyncio import Redis as AsyncRedis

from devstack.stack import LocalStack, local_stack

if TYPE_CHECKING:  # the root conftest is imported by pytest, not as a package
    from conftest import Stack

READ_ONLY_TOKEN = "read-only-test-token"
SMALL_CAP = 4096
CONTRACT_URL = os.environ.get("UPSTASH_CONTRACT_URL", "")
CONTRACT_TOKEN = os.environ.get("UPSTASH_CONTRACT_TOKEN", "")
CONTRACT = bool(CONTRACT_URL and CONTRACT_TOKEN)
TARGETS = ["gateway", "upstash"] if CONTRACT else ["gateway"]
# Fixtures a test may ask for that reach past the SDK into the local stack: such tests are
# gateway-only (only the test's own arguments count: the SDK fixtures build on `stack` too).
_LOCAL_FIXTURES = frozenset({"backend", "raw_backend", "stack", "http", "small", "read_only"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run only SDK-only tests against the contract database."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        function = getattr(item, "function", None)
        asked = inspect.signature(function).parameters if function else {}
        local = _LOCAL_FIXTURES & set(asked)
        if params.get("target") == "upstash" and (local or item.get_closest_marker("gateway_only")):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    """Where the SDK fixtures point: the local gateway, and a real Upstash when configured."""
    return request.param


@pytest.fixture(params=["base64", None], ids=["base64", "plain"])
def encoding(request: pytest.FixtureRequest) -> str | None:
    """Both response encodings the SDK can ask for."""
    return request.param


def _endpoint(target: str, stack: Stack) -> tuple[str, str]:
    return (CONTRACT_URL, CONTRACT_TOKEN) if target == "upstash" else (stack.url, stack.token)


@pytest.fixture(scope="session")
def sdk_clients(stack: Stack) -> Iterator[dict[tuple[str, str | None], Redis]]:
    """One sync SDK client per target and encoding for the session (~80 ms each to build)."""
    clients = {
        (target, encoding): Redis(
            *_endpoint(target, stack),
            rest_encoding=encoding,
            rest_retries=0,
            allow_telemetry=False,
        )
        for target in TARGETS
        for encoding in ("base64", None)
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def redis(
    sdk_clients: dict[tuple[str, str | None], Redis],
    target: str,
    encoding: str | None,
    request: pytest.FixtureRequest,
) -> Redis:
    """The sync SDK against the gateway (or the contract database), on a flushed database."""
    client = sdk_clients[(target, encoding)]
    if target == "gateway":
        request.getfixturevalue("backend")  # flushes the backing server
    else:
        client.flushall()
    return client


@pytest.fixture
async def aredis(
    stack: Stack, target: str, encoding: str | None, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncRedis]:
    """The async SDK against the gateway (or the contract database), on a flushed database."""
    client = AsyncRedis(
        *_endpoint(target, stack), rest_encoding=encoding, rest_retries=0, allow_telemetry=False
    )
    if target == "gateway":
        request.getfixturevalue("backend")
    else:
        await client.flushall()
    yield client
    await client.close()


class Http:
    """Raw HTTP to a gateway: `post(["GET", "k"])`, `call("/get/k")`, with the token by default."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.client = httpx.Client(base_url=url, timeout=10)

    def auth(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **headers}

    def post(self, body: Any, path: str = "/", **headers: str) -> httpx.Response:
        return self.client.post(path, json=body, headers=self.auth(**headers))

    def base64(self, body: Any, path: str = "/") -> httpx.Response:
        return self.post(body, path, **{"Upstash-Encoding": "base64"})

    def call(self, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, **kwargs)

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="session")
def session_http(stack: Stack) -> Iterator[Http]:
    client = Http(stack.url, stack.token)
    yield client
    client.close()


@pytest.fixture
def http(session_http: Http, backend: valkey.Valkey) -> Http:
    """Raw HTTP to the session gateway, on a flushed database."""
    return session_http


@pytest.fixture(scope="module")
def small_gateway(stack: Stack) -> Iterator[LocalStack]:
    """A second gateway on the same Valkey: a 4 KiB request cap and a read-only token."""
    with local_stack(
        redis_url=stack.redis_url,
        token=stack.token,
        read_only_token=READ_ONLY_TOKEN,
        max_request_bytes=SMALL_CAP,
    ) as small:
        yield small


@pytest.fixture(scope="module")
def small_http(small_gateway: LocalStack) -> Iterator[Http]:
    client = Http(small_gateway.url, small_gateway.token)
    yield client
    client.close()


@pytest.fixture(scope="module")
def read_only_http(small_gateway: LocalStack) -> Iterator[Http]:
    client = Http(small_gateway.url, READ_ONLY_TOKEN)
    yield client
    client.close()


@pytest.fixture
def small(small_http: Http, backend: valkey.Valkey) -> Http:
    """Raw HTTP with the full token to the gateway with a 4 KiB cap, on a flushed database."""
    return small_http


@pytest.fixture
def read_only(read_only_http: Http, backend: valkey.Valkey) -> Http:
    """Raw HTTP with the read-only token, on a flushed database."""
    return read_only_http


@pytest.fixture
def raw_backend(stack: Stack, backend: valkey.Valkey) -> Iterator[valkey.Valkey]:
    """A direct client that returns bytes (for values that are not UTF-8)."""
    client = valkey.Valkey.from_url(stack.redis_url)
    yield client
    client.close()
