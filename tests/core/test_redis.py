"""The Redis adapters: timeouts, the retry policy, error typing, the script runner.

Faults a real server cannot produce on demand (5xx, broken bodies, read timeouts) come from
`respx`; a stalled server is a real socket that accepts and never answers.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest
import respx
import valkey

from core.errors import UpstashError
from core.redis import RestClient, Script, TcpClient
from tests.conftest import Stack

FAKE = "http://upstash.invalid"


@pytest.fixture
def stalled_url() -> Iterator[str]:
    """A server that accepts connections and never says a word."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    yield f"http://127.0.0.1:{silent.getsockname()[1]}"
    silent.close()


def test_a_stalled_server_is_cut_by_the_timeout(stalled_url: str) -> None:
    """A hanging call ends as UpstashError after the timeout, not never (the SDK's default)."""
    with (
        closing(RestClient(stalled_url, "t", timeout_s=0.3, retries=3)) as client,
        pytest.raises(UpstashError, match="ReadTimeout"),
    ):
        client.execute(["SET", "k", "v"])
    # A write that may have run is not resent: one timeout, not four.
    assert client.round_trips == 1


def test_a_stalled_read_is_retried_then_fails(stalled_url: str) -> None:
    with (
        closing(RestClient(stalled_url, "t", timeout_s=0.2, retries=2)) as client,
        pytest.raises(UpstashError),
    ):
        client.execute(["GET", "k"])
    assert client.round_trips == 3


def test_a_refused_connection_is_retried_even_for_writes() -> None:
    """Nothing reached the server, so resending a write is safe."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with (
        closing(RestClient(f"http://127.0.0.1:{port}", "t", timeout_s=0.5, retries=2)) as client,
        pytest.raises(UpstashError, match="unreachable"),
    ):
        client.execute(["SET", "k", "v"])
    assert client.round_trips == 3


@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(200, content=b'{"result": "tru'),
        httpx.Response(500, json={"error": "ERR internal"}),
    ],
    ids=["html-5xx", "truncated-json", "json-error"],
)
def test_broken_answers_become_the_typed_error(response: httpx.Response) -> None:
    respx.post(FAKE).mock(return_value=response)
    with closing(RestClient(FAKE, "t", retries=0)) as client, pytest.raises(UpstashError):
        client.execute(["SET", "k", "v"])


@respx.mock
def test_a_read_is_resent_after_a_broken_body() -> None:
    route = respx.post(FAKE).mock(
        side_effect=[
            httpx.Response(200, content=b"{"),
            httpx.Response(200, json={"result": "dg=="}),
        ]
    )
    with closing(RestClient(FAKE, "t", retries=1)) as client:
        assert client.execute(["GET", "k"]) == "v"
    assert route.call_count == 2


def test_server_errors_keep_their_message(rest: RestClient, backend: valkey.Valkey) -> None:
    backend.set("text", "not a number")
    with pytest.raises(UpstashError, match="not an integer"):
        rest.execute(["INCR", "text"])


def test_every_request_is_counted(rest: RestClient, backend: valkey.Valkey) -> None:
    rest.execute(["SET", "a", "1"])
    assert rest.pipeline([["GET", "a"], ["INCR", "a"]]) == ["1", 2]
    assert rest.pipeline([]) == []
    assert rest.round_trips == 2


def test_script_falls_back_to_eval_once_after_a_flush(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """EVALSHA first; NOSCRIPT makes one EVAL, which caches the script again."""
    script = Script("purge.lua")
    backend.rpush("dead", "a", "b")
    backend.script_flush()
    assert script(rest, ["dead"]) == 2
    assert rest.round_trips == 2  # EVALSHA (NOSCRIPT), then EVAL
    backend.rpush("dead", "c")
    assert script(rest, ["dead"]) == 1
    assert rest.round_trips == 3


def test_the_tcp_client_speaks_the_same_protocol(stack: Stack, backend: valkey.Valkey) -> None:
    backend.script_flush()
    backend.rpush("dead", "x")
    with closing(TcpClient(stack.redis_url)) as client:
        assert Script("purge.lua")(client, ["dead"]) == 1
        assert client.pipeline([["SET", "a", "1"], ["GET", "a"]])[1] == "1"


def test_a_rejected_pipeline_is_the_typed_error(stack: Stack) -> None:
    """A 401 on /pipeline is one error object, not an array: still our UpstashError."""
    with (
        closing(RestClient(stack.url, "wrong-token", retries=0)) as client,
        pytest.raises(UpstashError),
    ):
        client.pipeline([["GET", "a"], ["GET", "b"]])
        with pytest.raises(UpstashError, match="Unauthorized"):
            client.execute(["GET", "a"])
