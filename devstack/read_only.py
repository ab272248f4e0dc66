"""The read-only token: what it may run, and a server-side user that enforces it in scripts.

Upstash's read-only token "permits access to the read commands only"; KEYS and SCAN are
restricted too (UPSTASH_REST.md §5). At the top level `ReadOnlyAccess.denial` decides from
the server's own `COMMAND` flags: what is flagged `readonly` (plus PING, ECHO, TIME,
SCRIPT EXISTS), never KEYS or SCAN; anything else gets Upstash's `NOPERM` text.

A script run with that token (EVAL_RO, EVALSHA_RO, FCALL_RO) could still reach KEYS or SCAN
from inside; Valkey refuses writes there but not those. So the token's commands run on
connections authenticated as a Valkey ACL user allowed exactly the same commands (plus
`COMMAND GETKEYS`, which the key-locking guard asks): the server then refuses a forbidden
call wherever it comes from. The user is created on the first read-only request (a
random name and password; `ACL SETUSER` must be allowed on the backing server) and
deleted when the gateway stops.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from devstack.backend import Backend, BackendError, BackendUnavailable
from devstack.commands import command_name, subcommand

_EXTRA = frozenset({"PING", "ECHO", "TIME", "SCRIPT|EXISTS"})
_DENIED = frozenset({"KEYS", "SCAN"})
_SCRIPT_ONLY = ("COMMAND|GETKEYS",)  # asked by devstack.key_locking's guard
_ACL_FAILURE = re.compile(
    r"^ERR ACL failure in script: User \S+ has no permissions to run the '([^']+)' command"
)


def noperm(name: str) -> str:
    """Upstash's text for a command the token may not run."""
    return f"NOPERM this user has no permissions to run the '{name}' command or its subcommand"


def upstash_acl_error(text: str) -> str:
    """The server's ACL refusal inside a script, as Upstash's NOPERM text."""
    match = _ACL_FAILURE.match(text)
    return noperm(match.group(1).lower()) if match else text


class ReadOnlyAccess:
    """Read-only token policy and its backend connections, built lazily from `COMMAND`."""

    def __init__(self, backend: Backend, redis_url: str, timeout_s: float) -> None:
        self._admin = backend
        self._redis_url = redis_url
        self._timeout_s = timeout_s
        self._allowed: frozenset[str] | None = None
        self._containers: frozenset[str] = frozenset()
        self._backend: Backend | None = None
        self._user: str | None = None

    async def denial(self, args: Sequence[bytes]) -> str | None:
        """Upstash's NOPERM text when the read-only token may not run `args`, else None."""
        allowed = await self._load()
        name = command_name(args)
        if name in self._containers and len(args) > 1:
            name = f"{name}|{subcommand(args)}"
        if name not in allowed:
            return noperm(command_name(args).lower())
        return None

    async def backend(self) -> Backend:
        """Connections that run as the read-only ACL user (created on first use)."""
        if self._backend is None:
            allowed = await self._load()
            user, password = f"gateway-read-only-{secrets.token_hex(4)}", secrets.token_hex(24)
            rules = [f"+{name.lower()}" for name in sorted(allowed | set(_SCRIPT_ONLY))]
            reply = await self._admin.execute(
                [b"ACL", b"SETUSER", user.encode(), b"reset", b"on", f">{password}".encode()]
                + [b"~*", b"-@all"]
                + [rule.encode() for rule in rules]
            )
            if isinstance(reply, BackendError):
                raise BackendUnavailable(f"the read-only token needs ACL SETUSER: {reply}")
            self._user = user
            url = _with_credentials(self._redis_url, user, password)
            self._backend = Backend(url, timeout_s=self._timeout_s)
        return self._backend

    async def close(self) -> None:
        """Close the read-only connections and delete the ACL user."""
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
        if self._user is not None:
            await self._admin.execute([b"ACL", b"DELUSER", self._user.encode()])
            self._user = None

    async def _load(self) -> frozenset[str]:
        if self._allowed is None:
            table = await self._admin.execute([b"COMMAND"])
            if isinstance(table, BackendError):
                raise table
            readonly, containers = _readonly_commands(table)
            self._allowed = frozenset((readonly | _EXTRA) - _DENIED)
            self._containers = frozenset(containers)
        return self._allowed


def _readonly_commands(table: list[Any]) -> tuple[set[str], set[str]]:
    """Names flagged readonly (subcommands as `CONTAINER|SUB`), and the container names."""
    readonly: set[str] = set()
    containers: set[str] = set()
    for entry in table:
        name = entry[0].decode().upper()
        subs = entry[9] if len(entry) > 9 else []
        if subs:
            containers.add(name)
            readonly.update(s[0].decode().upper() for s in subs if _flagged_readonly(s))
        elif _flagged_readonly(entry):
            readonly.add(name)
    return readonly, containers


def _flagged_readonly(entry: list[Any]) -> bool:
    flags = {bytes(f).lower() for f in entry[2]}
    return b"readonly" in flags and b"write" not in flags


def _with_credentials(url: str, user: str, password: str) -> str:
    """`url` logging in as `user` (any credentials it carried are replaced)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
