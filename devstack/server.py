"""`GatewayServer`: the gateway app under uvicorn in a background thread.

Used by the local stack (`devstack.stack`). The listening socket is bound before
the thread starts, so `port=0` yields a known free port at once and `start()` returns only
when uvicorn accepts connections. `request_count` counts HTTP requests served, the unit the
project's round-trip budgets are written in.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.gateway import create_app


class _Counter:
    """ASGI wrapper counting HTTP requests (lifespan events are not requests)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.count += 1
        await self.app(scope, receive, send)


class GatewayServer:
    """An Upstash-compatible REST endpoint for the server at `redis_url`."""

    def __init__(
        self,
        redis_url: str,
        token: str,
        port: int = 0,
        host: str = "127.0.0.1",
        **app_options: Any,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._app = _Counter(create_app(redis_url, token, **app_options))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the gateway is not running")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def request_count(self) -> int:
        """HTTP requests served since start (or since `reset_count()`)."""
        return self._app.count

    def reset_count(self) -> None:
        self._app.count = 0

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind, serve in a daemon thread, and return once connections are accepted."""
        import uvicorn

        if self._thread is not None:
            return
        # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it every keep-alive request waits ~40 ms on a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit TCP_NODELAY: without it every response's body waits for the
        # client's delayed ACK of its headers, 40 ms per request on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._requested_port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="on",
            log_level="warning",
            access_log=False,  # request lines carry `_token` queries and values
            timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="gateway", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the gateway did not start (see the log above)")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to finish in-flight requests, close the pool, and wait for the thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout_s)
        self._port = None

    def __enter__(self) -> GatewayServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
