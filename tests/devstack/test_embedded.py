"""The local stack (`devstack.stack`) and its embedded Valkey: concurrent stacks never lose a
port race, and a stack leaves nothing running."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from devstack.embedded import EmbeddedValkey, ephemeral_port
from devstack.stack import LocalStack, local_stack

if TYPE_CHECKING:  # the root conftest is imported by pytest, not as a package
    from conftest import Stack

TOKEN = "embedded-test-token"
Started = list[tuple[AbstractContextManager[LocalStack], LocalStack]]


def _start_stack(stacks: Started, errors: list[BaseException]) -> None:
    try:
        starting = local_stack(token=TOKEN)
        stacks.append((starting, starting.__enter__()))
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)


@pytest.fixture
def five_stacks() -> Iterator[tuple[Started, list[BaseException]]]:
    """Five local stacks started at the same moment from five threads."""
    stacks: Started = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_start_stack, args=(stacks, errors)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    yield stacks, errors
    for starting, _ in stacks:
        starting.__exit__(None, None, None)


def test_five_concurrent_stacks_start(five_stacks: tuple[Started, list[BaseException]]) -> None:
    """Five stacks started at once all come up, each on a Valkey of its own."""
    stacks, errors = five_stacks
    assert errors == []
    assert len({stack.valkey.pid for _, stack in stacks if stack.valkey}) == 5
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for index, (_, stack) in enumerate(stacks):
        reply = httpx.post(stack.url, json=["SET", f"k{index}", "v"], headers=headers)
        assert reply.json() == {"result": "OK"}
    for _, stack in stacks:
        assert httpx.post(stack.url, json=["DBSIZE"], headers=headers).json() == {"result": 1}


def test_a_stack_stops_its_gateway_and_its_valkey(stack: Stack) -> None:
    """At the end of the block the gateway no longer answers and the Valkey process is gone;
    a stack given a server's URL leaves that server running."""
    with local_stack(token=TOKEN) as own, local_stack(redis_url=own.redis_url) as borrowing:
        assert own.valkey is not None and borrowing.valkey is None
        pid = own.valkey.pid
        assert borrowing.backend.ping() and borrowing.token != TOKEN  # a random token
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.post(own.url, json=["PING"], headers={"Authorization": f"Bearer {TOKEN}"})
    with local_stack(redis_url=stack.redis_url):
        pass
    assert stack.local.backend.ping()


def test_a_gateway_of_its_own_process_serves_the_stack(stack: Stack) -> None:
    """`own_process=True`: `rebalance gateway` in a child serves the same server, and is gone
    at the end of the block."""
    with local_stack(redis_url=stack.redis_url, own_process=True) as remote:
        assert remote.gateway is None
        headers = {"Authorization": f"Bearer {remote.token}"}
        assert httpx.post(remote.url, json=["PING"], headers=headers).json() == {"result": "PONG"}
    with pytest.raises(httpx.ConnectError):
        httpx.post(remote.url, json=["PING"], headers=headers)
    with pytest.raises(ValueError, match="max_request_bytes"):
        local_stack(own_process=True, max_request_bytes=1).__enter__()


def test_a_taken_port_is_retried_on_a_fresh_one(stack: Stack) -> None:
    """A candidate port already served by another Valkey is skipped, not adopted."""
    valkey_server = stack.local.valkey
    assert valkey_server is not None
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


def test_an_explicit_taken_port_fails_clearly(stack: Stack) -> None:
    """With an explicit port there is nothing to retry: a clear error names the problem."""
    taken = int(stack.redis_url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match="cannot start the embedded Valkey server"):
        EmbeddedValkey(port=taken).start()
