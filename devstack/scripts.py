"""Lua scripts between what clients send and what Valkey accepts.

The Upstash-only `allow-key-locking` flag is stripped from `#!lua flags=...` shebangs
(EVAL, EVAL_RO, SCRIPT LOAD), since Valkey rejects it, and enforced instead: such a script
runs behind `devstack.key_locking.guard`, which refuses keys outside KEYS as Upstash does.
In FUNCTION LOAD libraries the flag is only stripped from `register_function` flag tables
(accepted, not enforced). Lua errors still name the line of the client's text (a failing
redis.call in a guarded script names its first code line, where the guard made the call).
Clients address a script by the SHA1 of the text they sent, so
`Scripts` maps that SHA to the stripped script's SHA for EVALSHA, EVALSHA_RO and
SCRIPT EXISTS, answers SCRIPT LOAD with the original SHA, names the original SHA in
error texts (Redis 7 quotes the running script's SHA; Valkey 9 does not), and rewrites
`NOSCRIPT` to Upstash's `NOSCRIPT No matching script. Please use EVAL.`

The map lives in the gateway process. After a restart an original SHA is unknown again:
EVALSHA answers NOSCRIPT and the client falls back to EVAL, as it must on Upstash too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from devstack.backend import BackendError, Reply
from devstack.commands import Args, command_name, subcommand
from devstack.emulation import emulate
from devstack.key_locking import guard, upstash_error
from devstack.read_only import upstash_acl_error

UPSTASH_NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."
_KEY_LOCKING = b"allow-key-locking"
_FUNCTION_FLAG = re.compile(rb"""(['"])allow-key-locking\1\s*,?\s*""")


def sha1_hex(text: bytes) -> str:
    return hashlib.sha1(text).hexdigest()


def strip_script_flag(script: bytes) -> bytes:
    """The script without `allow-key-locking` in its shebang; other flags stay."""
    if not script.startswith(b"#!"):
        return script
    first, newline, rest = script.partition(b"\n")
    words = first.rstrip(b"\r").split(b" ")
    if not any(_KEY_LOCKING in _flags(w) for w in words):
        return script
    kept: list[bytes] = []
    for word in words:
        if word.startswith(b"flags="):
            flags = [f for f in _flags(word) if f and f != _KEY_LOCKING]
            if not flags:
                continue  # `#!lua` alone is valid; an empty `flags=` may not be
            word = b"flags=" + b",".join(flags)
        kept.append(word)
    ending = b"\r" if first.endswith(b"\r") else b""
    return b" ".join(kept) + ending + newline + rest


def server_script(script: bytes) -> bytes:
    """What Valkey runs for a client's script: unchanged, or stripped of the flag and guarded."""
    stripped = strip_script_flag(script)
    if stripped is script:
        return script
    shebang, _newline, body = stripped.partition(b"\n")
    can_write = not any(b"no-writes" in _flags(w) for w in shebang.rstrip(b"\r").split(b" "))
    return shebang + b"\n" + guard(body, can_write)


def _flags(word: bytes) -> list[bytes]:
    return word[len(b"flags=") :].split(b",") if word.startswith(b"flags=") else []


def strip_function_flag(library: bytes) -> bytes:
    """A FUNCTION LOAD library without `'allow-key-locking'` in its `flags={...}` tables.

    Lua accepts a trailing separator, so `{'no-writes', 'allow-key-locking'}` becomes
    `{'no-writes', }` and `{'allow-key-locking'}` becomes `{}`: both valid.
    """
    return _FUNCTION_FLAG.sub(b"", library)


@dataclass
class Prepared:
    """A command as sent to the server, and how to present the server's reply."""

    args: Args
    finish: Callable[[Reply], Reply]


class Scripts:
    """SHA bookkeeping between the scripts clients send and the ones Valkey accepts."""

    def __init__(self) -> None:
        self._to_server: dict[str, str] = {}  # sha1(original) -> sha1(stripped)
        self._to_client: dict[str, str] = {}  # the reverse, for error texts

    def prepare(self, args: Args) -> Prepared:
        """Rewrite script commands and emulated ones; any other command passes unchanged."""
        emulated = emulate(args)
        if emulated is not None:
            sent, finish = emulated
            return Prepared(sent, lambda reply: finish(self._fix_error(reply)))
        name = command_name(args)
        sub = subcommand(args)
        if name in ("EVAL", "EVAL_RO") and len(args) > 1:
            args = [args[0], self._register(args[1]), *args[2:]]
        elif name in ("EVALSHA", "EVALSHA_RO") and len(args) > 1:
            args = [args[0], self._server_sha(args[1]), *args[2:]]
        elif name == "SCRIPT" and sub == "LOAD" and len(args) == 3:
            original = sha1_hex(args[2]).encode()
            args = [args[0], args[1], self._register(args[2])]
            return Prepared(args, lambda r: self._fix_error(r) if _is_error(r) else original)
        elif name == "SCRIPT" and sub == "EXISTS":
            args = [*args[:2], *(self._server_sha(a) for a in args[2:])]
        elif name == "SCRIPT" and sub == "FLUSH":
            self._to_server.clear()
            self._to_client.clear()
        elif name == "FUNCTION" and sub == "LOAD":
            args = [*args[:-1], strip_function_flag(args[-1])]
        return Prepared(args, self._fix_error)

    def _register(self, script: bytes) -> bytes:
        server_text = server_script(script)
        if server_text is not script:
            original, server = sha1_hex(script), sha1_hex(server_text)
            self._to_server[original] = server
            self._to_client[server] = original
        return server_text

    def _server_sha(self, sha: bytes) -> bytes:
        text = sha.decode("ascii", errors="replace").lower()
        return self._to_server.get(text, text).encode()

    def _fix_error(self, reply: Reply) -> Reply:
        if not _is_error(reply):
            return reply
        text = upstash_acl_error(upstash_error(str(reply)))
        if text.startswith("NOSCRIPT"):
            return BackendError(UPSTASH_NOSCRIPT)
        for server, original in self._to_client.items():
            if server in text:  # Valkey names the script by the SHA it ran
                text = text.replace(server, original)
        return BackendError(text)


def _is_error(reply: Reply) -> bool:
    return isinstance(reply, BackendError)
