"""`rebalance gateway` as a process: prints its URL and token, serves, exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import valkey
from upstash_redis import Redis

if TYPE_CHECKING:
    from conftest import Stack

REBALANCE = Path(sys.executable).with_name("rebalance")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [str(REBALANCE), "gateway", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert process.stdout is not None and process.stderr is not None
    printed: dict[str, str] = {}
    while len(printed) < 2:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"gateway exited early: {process.stderr.read()}")
        name, _, value = line.strip().partition("=")
        if name.startswith("UPSTASH_REDIS_REST_"):
            printed[name] = value
    return process, printed


@pytest.fixture
def gateway() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process, printed = start("--token", "cli-token")
    with process:  # waits, and closes its pipes
        yield process, printed
        if process.poll() is None:
            process.kill()


def test_gateway_serves_and_stops_on_sigterm(
    gateway: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    """URL and token are printed; the SDK works; SIGTERM exits 0 and stops embedded Valkey."""
    process, printed = gateway
    assert printed["UPSTASH_REDIS_REST_TOKEN"] == "cli-token"
    url = printed["UPSTASH_REDIS_REST_URL"]
    assert url.startswith("http://127.0.0.1:")
    valkey_pids = [pid for pid in children(process.pid) if "valkey" in cmdline(pid)]
    assert len(valkey_pids) == 1
    client = Redis(url, "cli-token", rest_retries=0, allow_telemetry=False)
    try:
        assert client.set("cli", "works") is True
        assert client.get("cli") == "works"
    finally:
        client.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    deadline = time.monotonic() + 5
    while alive(valkey_pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(valkey_pids[0])


def test_gateway_stops_on_sigint(gateway: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    """Ctrl-C (SIGINT) is a clean exit too."""
    process, _ = gateway
    process.send_signal(signal.SIGINT)
    assert process.wait(15) == 0


def test_gateway_with_redis_url_uses_it(stack: Stack, backend: valkey.Valkey) -> None:
    """`--redis-url` serves that server and starts no embedded one; a random token is printed."""
    process, printed = start("--redis-url", stack.redis_url)
    try:
        token = printed["UPSTASH_REDIS_REST_TOKEN"]
        assert len(token) >= 20
        assert children(process.pid) == []
        client = Redis(
            printed["UPSTASH_REDIS_REST_URL"], token, rest_retries=0, allow_telemetry=False
        )
        try:
            client.set("via-url", "1")
        finally:
            client.close()
        assert backend.get("via-url") == "1"
    finally:
        with process:  # waits, and closes its pipes
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
