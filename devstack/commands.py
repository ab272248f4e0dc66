"""What the gateway does to a command before it reaches the shared backend connections.

- `parse_command`/`parse_pipeline`/`path_command`: request bodies and paths to argument lists.
- `refusal`: commands that cannot work over REST are answered here and never forwarded
  (UPSTASH_REST.md §9.1, §15). A pooled connection is shared by every request, so any
  command that blocks it or changes its state would leak into the next request:

  - blocking: BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP WAIT WAITAOF,
    and XREAD/XREADGROUP with BLOCK;
  - connection state: SELECT MULTI EXEC DISCARD WATCH UNWATCH SUBSCRIBE PSUBSCRIBE
    SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE MONITOR CLIENT QUIT HELLO RESET AUTH
    READONLY READWRITE ASKING;
  - server administration: SHUTDOWN DEBUG SYNC PSYNC REPLCONF REPLICAOF SLAVEOF FAILOVER
    MODULE CLUSTER SWAPDB MIGRATE ACL, and CONFIG other than CONFIG GET.

  Transactions go through `/multi-exec`; `PUBLISH` works; subscriptions do not (Upstash
  serves them as Server-Sent Events, which this gateway does not implement).
- `ReadOnlyPolicy`: the read-only token may run what the server flags `readonly` (plus PING,
  ECHO, TIME, SCRIPT EXISTS), never KEYS or SCAN; everything else gets Upstash's `NOPERM`.
- Scripts: see `devstack.scripts` (the `allow-key-locking` flag and SHA bookkeeping).

Not emulated: Upstash leniencies such as `ZRANGE ... LIMIT` without BYSCORE/BYLEX or
`UNLINK` with no key; Valkey's stricter answer comes back as the error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

from devstack.backend import Backend, BackendError

Args = list[bytes]


class RequestError(Exception):
    """The request itself is malformed or refused: answered with 400 and this message."""


# -- parsing --------------------------------------------------------------------------------


def to_arg(item: Any) -> bytes:
    """One JSON array element as a command argument.

    Integers stay exact, floats take their shortest round-trip form, booleans become
    `true`/`false` (how JavaScript clients stringify them); nulls, objects and arrays are
    refused, since the SDKs serialise those to strings before sending.
    """
    if isinstance(item, str):
        return item.encode("utf-8", errors="surrogatepass")
    if isinstance(item, bool):
        return b"true" if item else b"false"
    if isinstance(item, int):
        return str(item).encode()
    if isinstance(item, float):
        if math.isnan(item):
            raise RequestError("ERR NaN is not a valid argument")
        if math.isinf(item):
            return b"inf" if item > 0 else b"-inf"
        return repr(item).encode()
    raise RequestError(f"ERR arguments must be strings or numbers, got {type(item).__name__}")


def parse_command(value: Any) -> Args:
    """A JSON array `["CMD", arg, ...]` as an argument list."""
    if not isinstance(value, list):
        raise RequestError('ERR the request body must be a JSON array: ["COMMAND", ...]')
    if not value:
        raise RequestError("ERR empty command")
    return [to_arg(item) for item in value]


def parse_pipeline(value: Any) -> list[Args]:
    """A JSON array of command arrays."""
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise RequestError("ERR the request body must be a JSON array of command arrays")
    return [parse_command(row) for row in value]


def path_command(raw_path: bytes, body: bytes | None, raw_query: bytes) -> Args:
    """`/set/foo/bar` + optional body (last argument) + query arguments (`EX=100` is two).

    Segments are percent-decoded one by one, so `%2F` is a slash inside a key. `_token` is
    authentication, not an argument; a bare query key (`?NX`) is one argument.
    """
    segments = raw_path.split(b"/")[1:]
    if segments and segments[-1] == b"":
        segments.pop()  # a trailing slash adds nothing
    args = [unquote_to_bytes(s) for s in segments]
    if body:
        args.append(body)
    for part in raw_query.decode("latin-1").split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if unquote_plus(key) == "_token":
            continue
        args.append(unquote_plus(key).encode())
        if sep:
            args.append(unquote_plus(value).encode())
    if not args or not args[0]:
        raise RequestError("ERR empty command")
    return args


def command_name(args: Sequence[bytes]) -> str:
    return args[0].decode("utf-8", errors="replace").upper()


# -- refusal --------------------------------------------------------------------------------

_BLOCKING = frozenset(
    {
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
    }
)
_CONNECTION_STATE = frozenset(
    {
        "SELECT",
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH",
        "UNWATCH",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "MONITOR",
        "CLIENT",
        "QUIT",
        "HELLO",
        "RESET",
        "AUTH",
        "READONLY",
        "READWRITE",
        "ASKING",
    }
)
_ADMIN = frozenset(
    {
        "SHUTDOWN",
        "DEBUG",
        "SYNC",
        "PSYNC",
        "REPLCONF",
        "REPLICAOF",
        "SLAVEOF",
        "FAILOVER",
        "MODULE",
        "CLUSTER",
        "SWAPDB",
        "MIGRATE",
        "ACL",
    }
)


def refusal(args: Sequence[bytes]) -> str | None:
    """Why this command is not forwarded, or None when it may be."""
    name = command_name(args)
    if name in _BLOCKING or (name in ("XREAD", "XREADGROUP") and _has_block_option(args)):
        return f"ERR Command is not available over REST: '{name}' blocks; poll instead"
    if name in ("MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"):
        return f"ERR Command is not available over REST: '{name}'; use /multi-exec"
    if name in _CONNECTION_STATE:
        return f"ERR Command is not available over REST: '{name}' changes connection state"
    if name in _ADMIN or (name == "CONFIG" and subcommand(args) != "GET"):
        return f"ERR Command is not available over REST: '{name}'"
    return None


def _has_block_option(args: Sequence[bytes]) -> bool:
    for arg in args[1:]:
        word = arg.upper()
        if word == b"STREAMS":  # keys and ids follow: a key may well be called "block"
            return False
        if word == b"BLOCK":
            return True
    return False


def subcommand(args: Sequence[bytes]) -> str:
    return args[1].decode("utf-8", errors="replace").upper() if len(args) > 1 else ""


# -- read-only token ------------------------------------------------------------------------

_READ_ONLY_EXTRA = frozenset({"PING", "ECHO", "TIME", "SCRIPT|EXISTS"})
_READ_ONLY_DENIED = frozenset({"KEYS", "SCAN"})


class ReadOnlyPolicy:
    """Which commands the read-only token may run, from the server's own `COMMAND` flags.

    The command table is read once, on the first read-only request, and cached.
    """

    def __init__(self) -> None:
        self._readonly: frozenset[str] | None = None
        self._containers: frozenset[str] = frozenset()

    async def denial(self, args: Sequence[bytes], backend: Backend) -> str | None:
        """Upstash's NOPERM text when the read-only token may not run `args`, else None."""
        if self._readonly is None:
            await self._load(backend)
        assert self._readonly is not None
        name = command_name(args)
        if name in self._containers and len(args) > 1:
            name = f"{name}|{subcommand(args)}"
        if name in _READ_ONLY_DENIED or (
            name not in self._readonly and name not in _READ_ONLY_EXTRA
        ):
            shown = command_name(args).lower()
            return (
                f"NOPERM this user has no permissions to run the '{shown}' "
                "command or its subcommand"
            )
        return None

    async def _load(self, backend: Backend) -> None:
        table = await backend.execute([b"COMMAND"])
        if isinstance(table, BackendError):
            raise table
        readonly: set[str] = set()
        containers: set[str] = set()
        for entry in table:
            name = entry[0].decode().upper()
            if _flagged_readonly(entry):
                readonly.add(name)
            for sub in entry[9] if len(entry) > 9 else []:
                containers.add(name)
                if _flagged_readonly(sub):
                    readonly.add(sub[0].decode().upper())
        self._readonly, self._containers = frozenset(readonly), frozenset(containers)


def _flagged_readonly(entry: list[Any]) -> bool:
    flags = {bytes(f).lower() for f in entry[2]}
    return b"readonly" in flags and b"write" not in flags
