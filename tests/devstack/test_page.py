"""The dev page in a real headless Chromium (Debian's, installed by `make tools`).

`python -m devstack.dev` runs as `make dev` does (its ticker drains, its pushes go through
the management API stand-in), pointed at the test stack. The browser opens the printed page
address, clicks Submit, and must show `queued → processing → succeeded` for the job it
submitted. The browser is driven over the DevTools protocol with the `websockets` client: no
driver download. A missing browser fails the test (`make tools` installs it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.devstack.test_dev import read_until

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

pytestmark = pytest.mark.slow


def browser_path() -> str:
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    assert found, "no chromium on PATH: run `make tools` (scripts/ensure-chromium.sh)"
    return found


@pytest.fixture
def page_url(env: dict[str, str]) -> Iterator[str]:
    """`make dev`'s server on a free port. Its ticker's first drain starts at once and has 30 s:
    the job runs well inside it (a drain cuts off a job that would outrun its budget, and
    retries it, which would add `retrying` to what the page shows)."""
    child_env = {**os.environ, **env}
    child_env.update(
        PORT="0",
        DEV_DRAIN_INTERVAL_S="30",
        DRAIN_POLL_INTERVAL_MS="50",
        DRAIN_POLL_MAX_INTERVAL_MS="100",
        SIM_LATENCY_MS="700",  # long enough for the page to see `processing`
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.dev"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield read_until(proc, r"Page:\s+(http://\S+)", 60).group(1)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # and its pipe closed


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[ClientConnection]:
    """A headless Chromium's first page target, over the DevTools protocol."""
    proc = subprocess.Popen(
        [
            browser_path(),
            "--headless",
            "--no-sandbox",  # root in CI
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = read_devtools_port(proc)
        targets = httpx.get(f"http://127.0.0.1:{endpoint}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as cdp:
            yield cdp
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # and its pipe closed


def read_devtools_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if match := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
            return int(match.group(1))
        if not line and proc.poll() is not None:
            break
    raise AssertionError("chromium never opened its DevTools port")


_ids = itertools.count(1)


def call(cdp: ClientConnection, method: str, **params: Any) -> dict[str, Any]:
    """One DevTools command; its result (events in between are skipped)."""
    ident = next(_ids)
    cdp.send(json.dumps({"id": ident, "method": method, "params": params}))
    while True:
        reply = json.loads(cdp.recv(timeout=15))
        if reply.get("id") == ident:
            assert "error" not in reply, reply
            return dict(reply["result"])


def evaluate(cdp: ClientConnection, expression: str) -> Any:
    result = call(cdp, "Runtime.evaluate", expression=expression, returnByValue=True)
    return result["result"].get("value")


def wait_for(cdp: ClientConnection, expression: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := evaluate(cdp, expression)):
        assert time.monotonic() < deadline, f"{expression} never became true"
        time.sleep(0.1)
    return value


def test_the_page_shows_queued_processing_succeeded_live(
    page_url: str, browser: ClientConnection
) -> None:
    """Submit in the browser; the WebSocket brings the status changes; closed with 1000."""
    call(browser, "Page.navigate", url=page_url)
    wait_for(browser, "document.readyState === 'complete' && !!document.getElementById('submit')")
    assert evaluate(browser, "document.getElementById('token').value.length > 20")
    evaluate(browser, "document.getElementById('submit').click()")
    closed = wait_for(browser, "document.body.dataset.closed")
    assert closed == "1000", evaluate(browser, "document.getElementById('log').textContent")
    assert evaluate(browser, "document.getElementById('path').textContent") == (
        "queued → processing → succeeded"
    )
    job_id = evaluate(browser, "document.getElementById('job').textContent")
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert evaluate(browser, "document.getElementById('error').textContent") == ""
