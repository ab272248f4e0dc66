"""Enforcing Upstash's `allow-key-locking` script flag on a server that has no such flag.

On Upstash a script flagged `#!lua flags=allow-key-locking` locks only its KEYS; touching
any other key fails with `ERR Dynamic keys are not allowed in Lua scripts when
'allow-key-locking' flag is set. Key was: <key>` and the script changes nothing; FLUSHDB and
FLUSHALL are not allowed in it (UPSTASH_REST.md §9.2).

Valkey runs the script with a one-line prologue (`guard`) that shadows the global `redis`
with a table whose `call`/`pcall` first ask the server which keys the command touches
(`COMMAND GETKEYS`, Valkey's own key specs) and refuse any key not in KEYS. So that a
refused script changes nothing, each declared key is snapshotted (DUMP + PTTL) before the
script's first command on it and restored before the error is raised; scripts that cannot
write (`no-writes`) skip the snapshots. The prologue shares the script's first code line,
so line numbers in error texts stay those of the client's text.

The server appends ` script: ... on @user_script:N.` to an error raised this way;
`upstash_error` cuts it so the text is Upstash's exactly.
"""

from __future__ import annotations

import re

DYNAMIC_KEY_ERROR = (
    "ERR Dynamic keys are not allowed in Lua scripts when 'allow-key-locking' flag is set."
)
FLUSH_ERROR = "ERR {name} is not allowed in Lua scripts when 'allow-key-locking' flag is set"

# One line on purpose (see the module docstring). `undo` is substituted: true or false.
_PROLOGUE = (
    "local redis = (function(r, declared, undo) "
    "local allowed, saved, order = {}, {}, {} "
    "for _, k in ipairs(declared) do allowed[k] = true end "
    "local function restore() "
    "for i = #order, 1, -1 do local k = order[i]; local s = saved[k] "
    "if s[1] then r.pcall('RESTORE', k, s[2] > 0 and s[2] or 0, s[1], 'REPLACE') "
    "else r.pcall('DEL', k) end end end "
    "local function check(...) "
    "local name = string.upper(tostring((...))) "
    "if name == 'FLUSHALL' or name == 'FLUSHDB' then restore() "
    "error({err = string.format(%(flush)s, name)}) end "
    "local keys = r.pcall('COMMAND', 'GETKEYS', ...) "
    "if type(keys) ~= 'table' or keys.err then return end "
    "for _, k in ipairs(keys) do "
    "if not allowed[k] then restore() error({err = %(dynamic)s .. ' Key was: ' .. k}) end "
    "if undo and saved[k] == nil then "
    "saved[k] = {r.call('DUMP', k), r.call('PTTL', k)}; order[#order + 1] = k end end end "
    "return setmetatable({"
    "call = function(...) check(...) return r.call(...) end, "
    "pcall = function(...) check(...) return r.pcall(...) end}, {__index = r}) "
    "end)(redis, KEYS, %(undo)s); "
)
_SUFFIX = re.compile(r" script: .*$", re.DOTALL)


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def guard(body: bytes, can_write: bool) -> bytes:
    """The script body (shebang line removed) with the key check in front of its first line."""
    prologue = _PROLOGUE % {
        "flush": _lua_string(FLUSH_ERROR.replace("{name}", "%s")),
        "dynamic": _lua_string(DYNAMIC_KEY_ERROR),
        "undo": "true" if can_write else "false",
    }
    return prologue.encode() + body


def upstash_error(text: str) -> str:
    """A key-locking refusal without the suffix the server appends to script errors."""
    if text.startswith(DYNAMIC_KEY_ERROR) or (
        text.startswith("ERR FLUSH") and "allow-key-locking" in text
    ):
        return _SUFFIX.sub("", text)
    return text
