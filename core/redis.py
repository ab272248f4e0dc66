"""Redis access: one small protocol, an Upstash REST adapter, an optional TCP adapter.

Nothing else in the project imports `upstash_redis` or `redis`. The REST adapter hides the
SDK's quirks:

- the SDK's `httpx.Client` has no timeout at all; ours has `UPSTASH_TIMEOUT_MS` on every call,
  so a stalled Upstash costs a bounded slice of the Lambda's time;
- the SDK retries any failure after sleeping 3 s; we retry only where it is safe: a request
  that never connected (nothing reached the server), or a read-only command or script;
- every HTTP request is counted in `round_trips`, the currency of our budgets;
- `UpstashError` (the SDK's) and transport errors become `core.errors.UpstashError`.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from core.errors import UpstashError
from core.settings import Settings, get_settings

Command = Sequence[str | int | float]

# Commands whose repetition cannot change anything: safe to resend after a read timeout.
READ_ONLY = frozenset(
    {
        "GET",
        "MGET",
        "HGET",
        "HMGET",
        "HGETALL",
        "HLEN",
        "LLEN",
        "LRANGE",
        "LINDEX",
        "ZRANGE",
        "ZCARD",
        "ZCOUNT",
        "ZSCORE",
        "ZRANGEBYSCORE",
        "EXISTS",
        "TTL",
        "PTTL",
        "TYPE",
        "PING",
        "ECHO",
        "SCAN",
        "INFO",
        "EVALSHA_RO",
        "EVAL_RO",
        "SCRIPT",
    }
)
# httpx writes a request's headers and body separately; with Nagle's algorithm on, the body
# waits for the server's delayed ACK of the headers (40 ms on Linux) on every request.
NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_T = TypeVar("_T")


class RedisClient(Protocol):
    """What `core` needs of Redis; both adapters implement it."""

    round_trips: int

    def execute(self, command: Command) -> Any: ...

    def pipeline(self, commands: Sequence[Command]) -> list[Any]: ...

    def close(self) -> None: ...

    # Clients are compared by identity: a process caches things per client (the drain's pusher).
    def __hash__(self) -> int: ...


class RestClient:
    """Upstash REST through the official SDK, with a timeout and a safe retry policy."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 3.0,
        retries: int = 1,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from upstash_redis import Redis  # the SDK is heavy-ish; load it with the first client

        self.round_trips = 0
        self._count_lock = threading.Lock()
        self._retries = retries
        self._sdk = Redis(
            url.rstrip("/"),  # the SDK appends "/pipeline" to the URL as given
            token,
            rest_retries=0,  # retries are ours: the SDK would sleep 3 s and resend writes
            allow_telemetry=False,
            read_your_writes=True,
        )
        # The SDK builds its client with timeout=None; a stalled server would hang us forever.
        self._sdk._http._client.close()
        self._sdk._http._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            # Idle connections are dropped before a server's usual 5 s keep-alive ends, so a
            # request never goes out on a connection the server is closing.
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
            transport=transport or httpx.HTTPTransport(socket_options=NO_DELAY, retries=1),
            event_hooks={"request": [self._count], "response": [_refuse_server_errors]},
        )

    def _count(self, _request: httpx.Request) -> None:
        with self._count_lock:  # the drain claims ahead from a second thread
            self.round_trips += 1

    def execute(self, command: Command) -> Any:
        name = str(command[0]).upper()
        return self._call(lambda: self._sdk.execute(list(command)), _read_only(name, command))

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        if not commands:
            return []
        safe = all(_read_only(str(c[0]).upper(), c) for c in commands)

        def send() -> list[Any]:
            pipe = self._sdk.pipeline()
            for command in commands:
                pipe.execute(list(command))  # `execute` queues; `exec` sends
            try:
                return pipe.exec()
            except (AttributeError, TypeError) as exc:
                # One `{"error"}` object instead of an array (a 401, say): the SDK trips on it.
                raise UpstashError("Upstash rejected the pipeline as a whole") from exc

        return self._call(send, safe)

    def _call(self, send: Callable[[], _T], safe_to_resend: bool) -> _T:
        from upstash_redis.errors import UpstashError as SdkError

        attempt = 0
        while True:
            try:
                return send()
            except SdkError as exc:  # Upstash's own `{"error": ...}`: the command was refused
                raise UpstashError(str(exc)) from exc
            except _CONNECT_ERRORS as exc:
                if attempt >= self._retries:
                    raise UpstashError(f"Upstash unreachable: {type(exc).__name__}") from exc
            except Exception as exc:
                # A read timeout, a 5xx, a reset, or a body that is not a reply (HTML, JSON
                # without `result`, null, a list, truncated): the command may have run.
                # Resend reads only; the SDK's own failures on such bodies land here too.
                if not safe_to_resend or attempt >= self._retries:
                    raise UpstashError(_describe(exc)) from exc
            attempt += 1
            time.sleep(min(0.05 * 2**attempt, 0.5))

    def close(self) -> None:
        self._sdk.close()


KEEPALIVE_S = 2.0


class ServerError(httpx.HTTPError):
    """Upstash (or something in front of it) answered 5xx: whatever the body says."""


def _refuse_server_errors(response: httpx.Response) -> None:
    if response.status_code >= 500:
        raise ServerError(f"HTTP {response.status_code}")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ServerError):
        return f"Upstash answered {exc}"
    if isinstance(exc, httpx.HTTPError):
        return f"Upstash request failed: {type(exc).__name__}"
    return f"Upstash answered something that is not a reply: {type(exc).__name__}"


def _read_only(name: str, command: Command) -> bool:
    if name in ("EVALSHA", "EVAL"):
        return False
    if name == "SCRIPT":
        return len(command) > 1 and str(command[1]).upper() == "EXISTS"
    return name in READ_ONLY


class TcpClient:
    """The same protocol over redis-py (the `tcp` extra), for `REDIS_URL`."""

    def __init__(self, url: str, *, timeout_s: float = 3.0) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UpstashError("REDIS_URL is set but the `tcp` extra (redis) is missing") from exc
        self.round_trips = 0
        self._errors = (redis.RedisError, OSError)
        self.raw = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
        )

    def execute(self, command: Command) -> Any:
        self.round_trips += 1
        try:
            return self.raw.execute_command(*command)
        except self._errors as exc:
            raise UpstashError(f"Redis request failed: {type(exc).__name__}: {exc}") from exc

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        self.round_trips += 1
        pipe = self.raw.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            return pipe.execute()
        except self._errors as exc:
            raise UpstashError(f"Redis request failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.raw.close()


class Script:
    """A Lua script from `core/lua/`, sent as `EVALSHA` with a fallback to `EVAL`.

    `prelude` names shared Lua files (`_metrics.lua`, `_queue.lua`, ...) prepended to the script,
    so the helpers that several scripts use are written once.
    """

    def __init__(self, name: str, *, prelude: Sequence[str] = ()) -> None:
        self.name = name
        self.prelude = tuple(prelude)

    # Read on first use, not at import: a cold start loads only the scripts it runs.
    @cached_property
    def source(self) -> str:
        return "\n".join(_LUA_DIR.joinpath(p).read_text() for p in (*self.prelude, self.name))

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(self, client: RedisClient, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        tail = [len(keys), *keys, *(_arg(a) for a in args)]
        try:
            return client.execute(["EVALSHA", self.sha, *tail])
        except UpstashError as exc:
            if "NOSCRIPT" not in str(exc).upper():
                raise
        # One more round trip, once per server: EVAL also caches the script for EVALSHA.
        return client.execute(["EVAL", self.source, *tail])


_LUA_DIR = Path(__file__).with_name("lua")


def _arg(value: Any) -> str | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str):
        return value
    return str(value)


def make_client(settings: Settings) -> RestClient:
    """The REST client described by `settings`."""
    return RestClient(
        settings.upstash_redis_rest_url,
        settings.upstash_redis_rest_token,
        timeout_s=settings.upstash_timeout_s,
        retries=settings.upstash_retries,
    )


_client_lock = threading.Lock()
# One client per connection (URL, token, timeout, retries): the process's settings and any
# settings a caller passes with the same connection share one pool.
_clients: dict[tuple[str, str, int, int], RestClient] = {}


def client_for(settings: Settings) -> RestClient:
    """The process's REST client for the connection `settings` describe (built on first use,
    reused while the Lambda is warm).

    Built under a lock: a drain's threads and a request can ask at once, and the client built
    second would be dropped with its connections open."""
    connection = (
        settings.upstash_redis_rest_url,
        settings.upstash_redis_rest_token,
        settings.upstash_timeout_ms,
        settings.upstash_retries,
    )
    with _client_lock:
        if connection not in _clients:
            _clients[connection] = make_client(settings)
        return _clients[connection]


def get_client() -> RestClient:
    """The process-wide REST client, for the settings of the environment."""
    return client_for(get_settings())


def reset_client() -> None:
    """Close and forget the process's clients; the next `get_client()` builds a new one."""
    with _client_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def make_tcp_client(settings: Settings) -> TcpClient | None:
    """A TCP client when `REDIS_URL` is set, else None."""
    if not settings.redis_url:
        return None
    return TcpClient(settings.redis_url, timeout_s=settings.upstash_timeout_s)
