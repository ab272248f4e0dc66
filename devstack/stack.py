"""The local stack in one place: a Redis server behind the Upstash-compatible gateway.

`local_stack()` starts an embedded Valkey (`devstack.embedded`) unless a `redis://` URL is
given, puts a gateway (`devstack.server`) in front of it, and stops both, in that order, when
the block ends. What it yields, a `LocalStack`, is what a project process needs to talk to
it (`url`, `token`, `env()`) and what a test or a benchmark needs to look behind it (`backend`,
a direct client, for `FLUSHALL` and `INFO commandstats`). `make dev`, `rebalance gateway`, the
test suite and `make bench` all start their stack here.

With `own_process=True` the gateway runs as `rebalance gateway` in a child process, as Upstash
is a server of its own: a benchmark measuring code in this process would otherwise share the
interpreter lock with it.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.embedded import EmbeddedValkey
from devstack.server import GatewayServer

if TYPE_CHECKING:
    import valkey as valkey_py

# Where `python -m cli.main` resolves, installed or run from a checkout.
_ROOT = Path(__file__).resolve().parents[1]
URL_LINE = "UPSTASH_REDIS_REST_URL="


@dataclass(eq=False)
class LocalStack:
    """A running stack: the gateway's `url` and `token`, and the server behind it."""

    url: str
    token: str
    redis_url: str
    gateway: GatewayServer | None = None  # None when the gateway runs in a process of its own
    valkey: EmbeddedValkey | None = None  # None when the stack was given a server's URL
    _closed: bool = field(default=False, init=False, repr=False)

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables that point the project at this stack, with `overrides` on top."""
        return {
            "UPSTASH_REDIS_REST_URL": self.url,
            "UPSTASH_REDIS_REST_TOKEN": self.token,
            **overrides,
        }

    @cached_property
    def backend(self) -> valkey_py.Valkey:
        """A direct client to the backing server (strings decoded), closed with the stack."""
        import valkey

        if self._closed:
            raise RuntimeError("the local stack has stopped")
        return valkey.Valkey.from_url(self.redis_url, decode_responses=True)

    def close(self) -> None:
        self._closed = True
        client = self.__dict__.pop("backend", None)
        if client is not None:
            client.close()


@contextmanager
def local_stack(
    *,
    redis_url: str | None = None,
    token: str | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    read_only_token: str | None = None,
    own_process: bool = False,
    **app_options: Any,
) -> Iterator[LocalStack]:
    """Start a stack and stop it when the block ends.

    `redis_url`: the server behind the gateway (default: a new embedded Valkey). `token`:
    the gateway's bearer token (default: a random one). `port` 0 picks a free one.
    `app_options` go to `devstack.gateway.create_app` (`max_request_bytes`,
    `backend_timeout_s`); a gateway in its own process takes only the read-only token.
    """
    if own_process and app_options:
        raise ValueError(f"a gateway process takes no {', '.join(sorted(app_options))}")
    token = token or secrets.token_urlsafe(24)
    with ExitStack() as exits:
        embedded = None
        if redis_url is None:
            embedded = exits.enter_context(EmbeddedValkey())
            redis_url = embedded.url
        gateway = None
        if own_process:
            url = exits.enter_context(
                _gateway_process(redis_url, token, port, host, read_only_token)
            )
        else:
            gateway = GatewayServer(
                redis_url,
                token,
                port=port,
                host=host,
                read_only_token=read_only_token,
                **app_options,
            )
            url = exits.enter_context(gateway).url
        stack = LocalStack(url, token, redis_url, gateway, embedded)
        exits.callback(stack.close)
        yield stack


@contextmanager
def _gateway_process(
    redis_url: str, token: str, port: int, host: str, read_only_token: str | None
) -> Iterator[str]:
    """`rebalance gateway` in a child process; yields its URL, terminates it at the end."""
    args = [sys.executable, "-m", "cli.main", "gateway", "--port", str(port), "--host", host]
    args += ["--token", token, "--redis-url", redis_url]
    if read_only_token:
        args += ["--read-only-token", read_only_token]
    process = subprocess.Popen(
        args, cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    with process:  # closes the pipe and reaps the child
        try:
            yield _printed_url(process)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _printed_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None  # Popen(stdout=PIPE)
    for line in process.stdout:
        if line.startswith(URL_LINE):
            return line.strip().removeprefix(URL_LINE)
    raise RuntimeError(f"the gateway process exited ({process.wait()}) without serving")
