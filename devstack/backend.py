"""The gateway's connection to the backing Redis/Valkey: raw RESP2 replies, bounded in time.

Built on `valkey.asyncio`'s connection pool, but without its client layer: commands are
packed here and replies read with `RawParser`, so nothing is reshaped on the way (no
response callbacks: `SET` stays the status `OK`, `HGETALL` a flat list, scores strings).
The parser differs from valkey-py's in two ways the REST protocol needs:

- status replies come back as `Status` (a `bytes` subclass), so the encoder can leave a
  top-level `OK` unencoded while base64-encoding a bulk string that happens to read "OK";
- error replies keep their full text (valkey-py strips the `ERR `/`NOSCRIPT ` prefix).

Every call runs under one deadline (`timeout_s`). A connection whose exchange did not end
cleanly (timeout, cancellation, broken socket) is disconnected before it goes back to the
pool, so a half-read reply can never be served to the next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from valkey._parsers import _AsyncRESP2Parser
from valkey.asyncio import BlockingConnectionPool
from valkey.asyncio.connection import AbstractConnection
from valkey.exceptions import InvalidResponse, ResponseError
from valkey.exceptions import ValkeyError as _ValkeyError

Args = Sequence[bytes]
Reply = Any  # bytes | Status | int | None | list[Reply] | BackendError


class Status(bytes):
    """A RESP2 simple-string reply (`+OK`, `+PONG`), as opposed to a bulk string."""


class BackendError(ResponseError):
    """An error reply from the server; `str()` is its full text, e.g. `ERR syntax error`."""


class BackendUnavailable(Exception):
    """The server could not be reached or did not answer in time."""


class QueueError(Exception):
    """A transaction was discarded before running: a command failed when queued."""


class RawParser(_AsyncRESP2Parser):
    """RESP2 without interpretation: statuses tagged, error texts whole."""

    @classmethod
    def parse_error(cls, response: str) -> BackendError:
        return BackendError(response)

    async def _read_response(self, disable_decoding: bool = False) -> Reply:
        raw = await self._readline()
        kind, rest = raw[:1], raw[1:]
        if kind == b"+":
            return Status(rest)
        if kind == b"-":
            return self.parse_error(rest.decode("utf-8", errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if rest == b"-1" else await self._read(int(rest))
        if kind == b"*":
            if rest == b"-1":
                return None
            return [await self._read_response() for _ in range(int(rest))]
        raise InvalidResponse(f"Protocol Error: {raw!r}")


def pack(commands: Sequence[Args]) -> bytes:
    """Encode commands as RESP arrays of bulk strings, exactly as given."""
    out = bytearray()
    for args in commands:
        out += b"*%d\r\n" % len(args)
        for arg in args:
            out += b"$%d\r\n" % len(arg)
            out += arg
            out += b"\r\n"
    return bytes(out)


class Backend:
    """A pool of raw connections to one server, created lazily inside the serving loop."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, max_connections: int = 64) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._pool: BlockingConnectionPool | None = None

    def _get_pool(self) -> BlockingConnectionPool:
        if self._pool is None:
            self._pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=self._timeout_s,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                parser_class=RawParser,
                protocol=2,
                lib_name=None,  # skip CLIENT SETINFO on connect: one round trip fewer
                lib_version=None,
            )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AbstractConnection]:
        """A pooled connection for one exchange, under the deadline; failures raise
        `BackendUnavailable`."""
        pool = self._get_pool()
        clean = False
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await pool.get_connection("_")
                try:
                    yield conn
                    clean = True
                finally:
                    if not clean:
                        await conn.disconnect(nowait=True)
                    await pool.release(conn)
        except TimeoutError as exc:
            raise BackendUnavailable(f"no answer within {self._timeout_s:g} s") from exc
        except (_ValkeyError, OSError) as exc:
            # Connection refused, reset, or the handshake (AUTH/SELECT) rejected. The text names
            # host and port at most: the URL's password never reaches a message.
            raise BackendUnavailable(str(exc) or type(exc).__name__) from exc

    async def execute(self, args: Args) -> Reply:
        """Run one command; its error reply is returned as a `BackendError`, not raised."""
        return (await self.pipeline([args]))[0]

    async def pipeline(self, commands: Sequence[Args]) -> list[Reply]:
        """Send every command on one connection, then read every reply, in order."""
        async with self._connection() as conn:
            await conn.send_packed_command(pack(commands), check_health=False)
            return [await _read(conn) for _ in commands]

    async def transaction(self, commands: Sequence[Args]) -> list[Reply]:
        """MULTI, the commands, EXEC on one connection: atomic, with run-time errors per entry.

        Raises `QueueError` with the first queue-time error (the whole transaction is then
        discarded by the server, as with Upstash).
        """
        async with self._connection() as conn:
            await conn.send_packed_command(
                pack([[b"MULTI"], *commands, [b"EXEC"]]), check_health=False
            )
            replies = [await _read(conn) for _ in range(len(commands) + 2)]
        queued = replies[:-1]
        failed = next((r for r in queued if isinstance(r, BackendError)), None)
        if failed is not None:
            raise QueueError(str(failed))
        result = replies[-1]
        if isinstance(result, BackendError):  # EXECABORT without a queue error: keep its text
            raise QueueError(str(result))
        return list(result or [])


async def _read(conn: AbstractConnection) -> Reply:
    try:
        return await conn.read_response()
    except BackendError as exc:  # a complete error reply: the connection stays in sync
        return exc
