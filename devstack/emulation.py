"""Upstash behaviour that Valkey lacks, rewritten or composed before a command is forwarded.

Each rule is Upstash's observable behaviour as the official SDK's own test suite expects it
(upstash/redis-py, run against Upstash in its CI) and UPSTASH_REST.md §9.3:

- `XTRIM key MAXLEN ~ n`: Valkey trims whole 100-entry nodes (130 entries, `~ 5`: 30 left);
  Upstash leaves exactly n once at least 100 entries are in excess, and trims nothing
  below that (120 entries, `~ 30`: all kept). `LIMIT` caps what is removed.
- `XINFO CONSUMERS key group` of a missing group answers `[]`, not NOGROUP.
- `ZRANGE`/`ZRANGESTORE` by rank accept `LIMIT offset count` (applied to the rank range).
- `HTTL`/`HEXPIRETIME` truncate milliseconds to seconds (Valkey rounds): asked as
  `HPTTL`/`HPEXPIRETIME` and divided here.
- `SCAN` returns matches until COUNT (default 10) is met or the keyspace ends. The cursor
  is Valkey's, plus, above bit 64, how many keys of that cursor's page were already
  returned, so `COUNT 1` can stop inside a page.
- Redis 8.2 commands: `BITOP DIFF|DIFF1|ANDOR|ONE`, `XDELEX`, `XACKDEL`.
- `JSON.*` is not emulated: no JSON module under an open-source license is packaged for the
  embedded server, so a server without one answers an error naming what is missing.

Anything the rule does not recognise (bad numbers, odd options) is forwarded unchanged, so
Valkey's error comes back. Composed commands run as one Lua script (`devstack.emulation_lua`):
atomic, and usable inside pipelines and transactions.
"""

from __future__ import annotations

from collections.abc import Callable

from devstack import emulation_lua as lua
from devstack.backend import BackendError, Reply
from devstack.commands import Args, command_name, subcommand

Finish = Callable[[Reply], Reply]
_CURSOR_BITS = 64
_CURSOR_MASK = (1 << _CURSOR_BITS) - 1
_STREAM_POLICIES = (b"KEEPREF", b"DELREF", b"ACKED")
_NEW_BITOPS = (b"DIFF", b"DIFF1", b"ANDOR", b"ONE")


def _same(reply: Reply) -> Reply:
    return reply


def _int(arg: bytes) -> int | None:
    try:
        return int(arg)
    except ValueError:
        return None


def _eval(script: str, keys: list[bytes], argv: list[bytes], read: bool = False) -> Args:
    name = b"EVAL_RO" if read else b"EVAL"
    return [name, script.encode(), str(len(keys)).encode(), *keys, *argv]


def _error(text: str) -> Args:
    return _eval(lua.ERROR, [], [text.encode()], read=True)


def emulate(args: Args) -> tuple[Args, Finish] | None:
    """The command to send instead of `args` and how to present its reply, or None."""
    name = command_name(args)
    if name.startswith("JSON."):
        return args, _json_missing(name)
    rule = _RULES.get(name)
    return rule(args) if rule is not None else None


def _json_missing(name: str) -> Finish:
    """Name what is missing when the server has no JSON module (a server with one answers)."""

    def finish(reply: Reply) -> Reply:
        if isinstance(reply, BackendError) and str(reply).startswith("ERR unknown command"):
            return BackendError(
                f"ERR {name} needs a JSON module, which this server lacks: the embedded Valkey "
                "has none (JSON.* is not emulated; use a real Upstash database or "
                "--redis-url to a server with a JSON module)"
            )
        return reply

    return finish


def _xtrim(args: Args) -> tuple[Args, Finish] | None:
    # XTRIM key MAXLEN ~ n [LIMIT l]
    if len(args) not in (5, 7) or args[2].upper() != b"MAXLEN" or args[3] != b"~":
        return None
    maxlen = _int(args[4])
    limit: int | None = 0
    if len(args) == 7:
        limit = _int(args[6]) if args[5].upper() == b"LIMIT" else None
    if maxlen is None or maxlen < 0 or limit is None or limit < 0:
        return None
    return _eval(lua.XTRIM_APPROX, [args[1]], [args[4], str(limit).encode()]), _same


def _xinfo(args: Args) -> tuple[Args, Finish] | None:
    if subcommand(args) != "CONSUMERS" or len(args) != 4:
        return None

    def finish(reply: Reply) -> Reply:
        missing = isinstance(reply, BackendError) and str(reply).startswith("NOGROUP")
        return [] if missing else reply

    return args, finish


def _zrange(args: Args) -> tuple[Args, Finish] | None:
    store = command_name(args) == "ZRANGESTORE"
    keys = [args[2], args[1]] if store else [args[1]]
    first = 3 if store else 2
    if len(args) < first + 2:
        return None
    start, stop = _int(args[first]), _int(args[first + 1])
    options = [a.upper() for a in args[first + 2 :]]
    if b"LIMIT" not in options or b"BYSCORE" in options or b"BYLEX" in options:
        return None
    rev = withscores = b""
    offset = count = None
    i = first + 2
    while i < len(args):
        word = args[i].upper()
        if word == b"LIMIT" and i + 2 < len(args):
            offset, count = _int(args[i + 1]), _int(args[i + 2])
            i += 3
            continue
        if word == b"REV":
            rev = b"REV"
        elif word == b"WITHSCORES" and not store:
            withscores = b"WITHSCORES"
        else:
            return None
        i += 1
    if None in (start, stop, offset, count):
        return None
    argv = [str(v).encode() for v in (start, stop, offset, count)] + [rev, withscores]
    return _eval(lua.ZRANGE_RANK_LIMIT, keys, argv, read=not store), _same


def _seconds(name: bytes, shown: str, hidden: str) -> Callable[[Args], tuple[Args, Finish]]:
    """HTTL/HEXPIRETIME: ask for milliseconds, truncate to seconds (negatives are codes)."""

    def rule(args: Args) -> tuple[Args, Finish]:
        def finish(reply: Reply) -> Reply:
            if isinstance(reply, BackendError):
                return BackendError(str(reply).replace(f"'{hidden}'", f"'{shown}'"))
            if isinstance(reply, list):
                return [v // 1000 if isinstance(v, int) and v > 0 else v for v in reply]
            return reply

        return [name, *args[1:]], finish

    return rule


def _scan(args: Args) -> tuple[Args, Finish] | None:
    cursor = _int(args[1]) if len(args) > 1 else None
    if cursor is None or cursor < 0 or len(args) % 2 != 0:
        return None
    count, options = 10, []
    for i in range(2, len(args), 2):
        word = args[i].upper()
        if word == b"COUNT":
            value = _int(args[i + 1])
            if value is None or value < 1:
                return None
            count = value
        elif word in (b"MATCH", b"TYPE"):
            options += [word, args[i + 1]]
        else:
            return None
    skip, valkey_cursor = cursor >> _CURSOR_BITS, cursor & _CURSOR_MASK
    argv = [str(valkey_cursor).encode(), str(skip).encode(), str(count).encode(), *options]

    def finish(reply: Reply) -> Reply:
        if not isinstance(reply, list):
            return reply
        page_cursor, page_skip, keys = reply
        combined = (int(page_skip) << _CURSOR_BITS) | int(page_cursor)
        return [str(combined).encode(), keys]

    return _eval(lua.SCAN_FILL, [], argv, read=True), finish


def _bitop(args: Args) -> tuple[Args, Finish] | None:
    if len(args) < 4 or args[1].upper() not in _NEW_BITOPS:
        return None
    return _eval(lua.BITOP_82, args[2:], [args[1].upper()]), _same


def _stream_delete(args: Args) -> tuple[Args, Finish]:
    """XDELEX key [policy] IDS n id... and XACKDEL key group [policy] IDS n id..."""
    name = command_name(args)
    group_at = 2 if name == "XACKDEL" else None
    position = 3 if group_at else 2
    policy = b"KEEPREF"
    if len(args) > position and args[position].upper() in _STREAM_POLICIES:
        policy = args[position].upper()
        position += 1
    if len(args) < position + 3:
        return _error(f"ERR wrong number of arguments for '{name.lower()}' command"), _same
    numids = _int(args[position + 1])
    ids = args[position + 2 :]
    if args[position].upper() != b"IDS" or numids is None:
        return _error("ERR syntax error"), _same
    if numids != len(ids):
        return _error("ERR The `numids` parameter must match the number of arguments"), _same
    group = args[group_at] if group_at else b""
    return _eval(lua.XDELEX, [args[1]], [group, policy, *ids]), _same


_RULES: dict[str, Callable[[Args], tuple[Args, Finish] | None]] = {
    "XTRIM": _xtrim,
    "XINFO": _xinfo,
    "ZRANGE": _zrange,
    "ZRANGESTORE": _zrange,
    "HTTL": _seconds(b"HPTTL", "httl", "hpttl"),
    "HEXPIRETIME": _seconds(b"HPEXPIRETIME", "hexpiretime", "hpexpiretime"),
    "SCAN": _scan,
    "BITOP": _bitop,
    "XDELEX": _stream_delete,
    "XACKDEL": _stream_delete,
}
