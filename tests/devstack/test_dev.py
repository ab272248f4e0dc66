"""`make dev`: starts the whole stack, serves the API and `/healthz`, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def session_pids(sid: int) -> set[int]:
    """Every live process of session `sid` (what Ctrl-C in a terminal would reach)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.add(int(entry.name))
    return pids


def read_until(
    proc: subprocess.Popen[str], pattern: str, timeout_s: float, seen: list[str] | None = None
) -> re.Match[str]:
    """The first match of `pattern` on stdout; `seen` collects the lines read until then."""
    deadline = time.monotonic() + timeout_s
    seen = [] if seen is None else seen
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if match := re.search(pattern, line):
            return match
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{pattern!r} never printed; output was:\n{''.join(seen)}")


def start_dev(command: list[str], **env: str) -> subprocess.Popen[str]:
    """The dev server in a session of its own, on the embedded stack (no Upstash variables
    inherited), its stdout piped for `read_until`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("UPSTASH_REDIS_REST")}
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**base, "PORT": "0", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


@pytest.mark.timeout(180)
def test_make_dev_serves_and_stops_cleanly_on_ctrl_c() -> None:
    """The printed URL answers /healthz and a submit; Ctrl-C ends every process it started."""
    proc = start_dev(
        ["make", "--no-print-directory", "dev"], DEV_DRAIN_INTERVAL_S="1", SIM_LATENCY_MS="1"
    )
    try:
        before: list[str] = []
        url = read_until(proc, r"API:\s+(http://\S+)", 120, before).group(1)
        assert not [line for line in before if line.startswith("{")]  # no log before the banner
        token = read_until(proc, r"Dev token: (\S+)", 10).group(1)
        scrape = read_until(proc, r"Scrape token: (\S+)", 10).group(1)
        assert len(session_pids(proc.pid)) >= 2  # make, python, valkey-server
        health = httpx.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["redis"] == "ok"
        auth = {"Authorization": f"Bearer {token}"}
        accepted = httpx.post(
            f"{url}/api/agent/rebalance", json={"targets": {"BTC": 1}}, headers=auth, timeout=10
        )
        assert accepted.status_code == 202
        status_url = url + accepted.json()["statusUrl"]
        deadline = time.monotonic() + 30
        while httpx.get(status_url, headers=auth, timeout=10).json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the ticker never drained the job"
            time.sleep(0.2)
        assert httpx.get(f"{url}/openapi.json", timeout=10).json()["openapi"].startswith("3.")
        # The printed token is an operator's: the printed metrics curl works.
        summary = httpx.get(f"{url}/api/agent/rebalance/metrics?days=1", headers=auth, timeout=10)
        assert summary.status_code == 200 and summary.json()["totalJobs"] == 1
        # The scrape token is this run's own, not a well-known default.
        assert scrape != "dev-scrape-token" and len(scrape) >= 24
        prometheus = httpx.get(
            f"{url}/api/agent/rebalance/metrics/prometheus",
            headers={"Authorization": f"Bearer {scrape}"},
            timeout=10,
        )
        assert prometheus.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
        with proc:  # waits, and closes its pipe
            proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_pids(proc.pid) == set()


@pytest.mark.timeout(120)
def test_dev_stops_on_sigterm_and_stops_its_valkey() -> None:
    """SIGTERM to the server process alone also stops the embedded server it started."""
    proc = start_dev(
        [str(ROOT / ".venv/bin/python"), "-m", "devstack.dev"], DEV_DRAIN_INTERVAL_S="0"
    )
    url = read_until(proc, r"API:\s+(http://\S+)", 60).group(1)
    assert "off" in read_until(proc, r"Drain:\s+(.*)", 5).group(1)
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    with proc:  # waits, and closes its pipe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_pids(proc.pid) == set()


def test_healthz_is_503_in_the_error_model_when_redis_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pointed at a port where nothing listens, `/healthz` says 503 with `Retry-After`."""
    from devstack.dev import build_app
    from tests.handlers.helpers import TestClient
    from tests.support.caches import reset_caches

    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "t")
    monkeypatch.setenv("UPSTASH_RETRIES", "0")
    reset_caches()
    try:
        answer = TestClient(build_app()).get("/healthz")
    finally:
        reset_caches()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert answer.json()["error"]["code"] == "service_unavailable"


def _dev_fails(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTASH_", "PORT"))}
    return subprocess.run(
        [sys.executable, "-m", "devstack.dev"],
        cwd=ROOT,
        env={**base, "DEV_DRAIN_INTERVAL_S": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named", "code"),
    [
        ({"PORT": "abc"}, "PORT", 2),
        ({"PORT": "70000"}, "PORT", 2),
        ({"DEV_DRAIN_INTERVAL_S": "abc"}, "DEV_DRAIN_INTERVAL_S", 2),
        ({"PORT": "0", "RATE_LIMIT_MAX": "many"}, "RATE_LIMIT_MAX", 2),
        (
            {"PORT": "0", "UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9",
             "UPSTASH_REDIS_REST_TOKEN": "stale", "UPSTASH_TIMEOUT_MS": "500"},
            "UPSTASH_REDIS_REST_URL=http://127.0.0.1:9 does not answer",
            1,
        ),
    ],
)  # fmt: skip
def test_make_dev_names_what_is_wrong_in_one_line(
    env: dict[str, str], named: str, code: int
) -> None:
    """A bad variable or an unreachable database: one line naming it, no traceback."""
    run = _dev_fails(env)
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make dev: ") and named in lines[0], lines
    assert "Traceback" not in run.stderr


def test_make_dev_on_a_taken_port_says_to_set_port() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _dev_fails({"PORT": str(port)})
    assert run.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr and "Set PORT" in run.stderr
    assert "Traceback" not in run.stderr
