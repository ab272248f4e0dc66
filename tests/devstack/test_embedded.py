"""Start-up of the embedded Valkey: concurrent stacks never lose a port race."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from devstack.embedded import EmbeddedValkey, ephemeral_port
from devstack.server import GatewayServer

TOKEN = "embedded-test-token"


def _start_stack(
    stacks: list[tuple[EmbeddedValkey, GatewayServer]], errors: list[BaseException]
) -> None:
    try:
        valkey_server = EmbeddedValkey()
        valkey_server.start()
        gateway = GatewayServer(valkey_server.url, TOKEN, port=0)
        stacks.append((valkey_server, gateway))
        gateway.start()
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)


@pytest.fixture
def five_stacks() -> Iterator[tuple[list[tuple[EmbeddedValkey, GatewayServer]], list]]:
    """Five embedded Valkeys and gateways started at the same moment from five threads."""
    stacks: list[tuple[EmbeddedValkey, GatewayServer]] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_start_stack, args=(stacks, errors)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    yield stacks, errors
    for valkey_server, gateway in stacks:
        gateway.stop()
        valkey_server.stop()


def test_five_concurrent_stacks_start(five_stacks) -> None:
    """Five stacks started at once all come up, each on a Valkey of its own."""
    stacks, errors = five_stacks
    assert errors == []
    assert len({v.pid for v, _ in stacks}) == 5
    for index, (_, gateway) in enumerate(stacks):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        reply = httpx.post(gateway.url, json=["SET", f"k{index}", "v"], headers=headers)
        assert reply.json() == {"result": "OK"}
    for _, gateway in stacks:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(gateway.url, json=["DBSIZE"], headers=headers).json() == {"result": 1}


def test_a_taken_port_is_retried_on_a_fresh_one(valkey_server: EmbeddedValkey) -> None:
    """A candidate port already served by another Valkey is skipped, not adopted."""
    taken = int(valkey_server.url.rsplit(":", 1)[1])
    candidates = iter([taken, taken])

    def pick(host: str) -> int:
        return next(candidates, None) or ephemeral_port(host)

    server = EmbeddedValkey(pick_port=pick)
    server.start()
    try:
        assert server.url != valkey_server.url
        assert server.pid != valkey_server.pid
    finally:
        server.stop()


def test_an_explicit_taken_port_fails_clearly(valkey_server: EmbeddedValkey) -> None:
    """With an explicit port there is nothing to retry: a clear error names the problem."""
    taken = int(valkey_server.url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match="cannot start the embedded Valkey server"):
        EmbeddedValkey(port=taken).start()
