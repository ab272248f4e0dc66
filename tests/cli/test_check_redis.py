"""`rebalance check redis` as a user runs it: a subprocess against the local stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import valkey

if TYPE_CHECKING:
    from conftest import Stack

REBALANCE = Path(sys.executable).with_name("rebalance")
REST_CHECKS = ["rest ping", "rest set", "rest get", "rest del", "queue push", "queue pop"]
TCP_CHECKS = ["tcp set", "tcp get", "tcp del", "tcp pubsub"]


def check(env: dict[str, str], target: str = "redis") -> subprocess.CompletedProcess[str]:
    # Only PATH and the given variables: nothing from the developer's shell leaks in.
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(REBALANCE), "check", target],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.strip().splitlines()


def test_all_checks_pass_over_rest_and_tcp(stack: Stack, backend: valkey.Valkey) -> None:
    """With REDIS_URL set, every REST, queue and TCP check passes and the exit status is 0."""
    result = check(stack.env(REDIS_URL=stack.redis_url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result) == [f"PASS {name}" for name in REST_CHECKS + TCP_CHECKS]


def test_rest_only_without_redis_url(stack: Stack, backend: valkey.Valkey) -> None:
    """Without REDIS_URL the TCP checks are not attempted."""
    result = check(stack.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result) == [f"PASS {name}" for name in REST_CHECKS]


def test_checks_leave_no_keys_behind(stack: Stack, backend: valkey.Valkey) -> None:
    """Scratch keys are deleted: the database is as empty afterwards as before."""
    check(stack.env(REDIS_URL=stack.redis_url))
    assert backend.dbsize() == 0


def test_wrong_token_fails(stack: Stack, backend: valkey.Valkey) -> None:
    """A wrong token: FAIL lines naming the reason, exit status 1."""
    result = check(stack.env(UPSTASH_REDIS_REST_TOKEN="wrong-token"))
    assert result.returncode == 1
    assert "FAIL rest ping: Unauthorized" in lines(result)
    assert all(line.startswith("FAIL ") for line in lines(result))
    assert "wrong-token" not in result.stdout + result.stderr


def test_unreachable_tcp_fails_only_tcp(stack: Stack, backend: valkey.Valkey) -> None:
    """A dead REDIS_URL fails the TCP checks while the REST ones pass."""
    result = check(stack.env(REDIS_URL="redis://127.0.0.1:1"))
    assert result.returncode == 1
    assert [line for line in lines(result) if line.startswith("PASS")] == [
        f"PASS {name}" for name in REST_CHECKS
    ]
    assert any(line.startswith("FAIL tcp set:") for line in lines(result))


def test_missing_configuration_fails(stack: Stack) -> None:
    """No Upstash variables: one FAIL line naming them, exit status 2 (bad settings)."""
    result = check({})
    assert result.returncode == 2
    assert lines(result)[0].startswith("FAIL config:")
    assert "UPSTASH_REDIS_REST_URL" in result.stdout
