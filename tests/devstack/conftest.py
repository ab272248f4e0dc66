"""Fixtures for the gateway conformance suite: SDK clients in both encodings, raw HTTP.

Everything goes to the session's real gateway and real Valkey (`stack`, `backend` from the
root conftest); a second gateway with a small request cap and a read-only token covers the
options a shared gateway cannot change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import valkey
from upstash_redis import Redis
from upstash_redis.asyncio import Redis as AsyncRedis

from devstack.embedded import EmbeddedValkey
from devstack.gateway import GatewayServer

if TYPE_CHECKING:  # the root conftest is imported by pytest, not as a package
    from conftest import Stack

READ_ONLY_TOKEN = "read-only-test-token"
SMALL_CAP = 4096


@pytest.fixture(params=["base64", None], ids=["base64", "plain"])
def encoding(request: pytest.FixtureRequest) -> str | None:
    """Both response encodings the SDK can ask for."""
    return request.param


@pytest.fixture(scope="session")
def sdk_clients(stack: Stack) -> Iterator[dict[str | None, Redis]]:
    """One sync SDK client per encoding for the session (each costs ~80 ms to build)."""
    clients = {
        encoding: Redis(
            stack.url, stack.token, rest_encoding=encoding, rest_retries=0, allow_telemetry=False
        )
        for encoding in ("base64", None)
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def redis(
    sdk_clients: dict[str | None, Redis], backend: valkey.Valkey, encoding: str | None
) -> Redis:
    """The sync SDK against the gateway, on a flushed database."""
    return sdk_clients[encoding]


@pytest.fixture
async def aredis(
    stack: Stack, backend: valkey.Valkey, encoding: str | None
) -> AsyncIterator[AsyncRedis]:
    """The async SDK against the gateway, on a flushed database."""
    client = AsyncRedis(
        stack.url, stack.token, rest_encoding=encoding, rest_retries=0, allow_telemetry=False
    )
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
def small_gateway(valkey_server: EmbeddedValkey, stack: Stack) -> Iterator[GatewayServer]:
    """A second gateway on the same Valkey: a 4 KiB request cap and a read-only token."""
    server = GatewayServer(
        valkey_server.url,
        stack.token,
        port=0,
        read_only_token=READ_ONLY_TOKEN,
        max_request_bytes=SMALL_CAP,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_http(small_gateway: GatewayServer, stack: Stack) -> Iterator[Http]:
    client = Http(small_gateway.url, stack.token)
    yield client
    client.close()


@pytest.fixture(scope="module")
def read_only_http(small_gateway: GatewayServer) -> Iterator[Http]:
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
