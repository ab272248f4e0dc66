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
- The read-only token: see `devstack.read_only`.
- Scripts: see `devstack.scripts` (the `allow-key-locking` flag and SHA bookkeeping).

Upstash's leniencies and Redis 8.2 commands are emulated in `devstack.emulation`. Not
emulated: `UNLINK` with no key (the SDK refuses it client-side); Valkey's answer comes back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

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
