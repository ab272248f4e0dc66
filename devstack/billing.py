"""Counting billed commands the way Upstash bills them, on the backing server.

Upstash bills every command, and a script as `EVAL` plus every `redis.call` inside it.
Valkey's `INFO commandstats` counts both. Connection bookkeeping (`HELLO`, `CLIENT …`,
`INFO` itself) is the gateway's and the test's, not the application's, so it is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

NOT_BILLED = (
    "cmdstat_info",
    "cmdstat_hello",
    "cmdstat_client|",
    "cmdstat_select",
    "cmdstat_auth",
    "cmdstat_flushall",
    "cmdstat_config|",
    "cmdstat_command",
)


def command_counts(backend: Any) -> dict[str, int]:
    stats = backend.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if not name.startswith(NOT_BILLED)
    }


@dataclass
class Billed:
    by_command: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_command.values())


@contextmanager
def billed(backend: Any) -> Iterator[Billed]:
    """`with billed(backend) as bill:` … then `bill.total`, `bill.by_command`."""
    before = command_counts(backend)
    result = Billed()
    yield result
    after = command_counts(backend)
    result.by_command = {
        name: calls - before.get(name, 0)
        for name, calls in after.items()
        if calls - before.get(name, 0)
    }
