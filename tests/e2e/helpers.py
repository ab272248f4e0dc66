"""End-to-end helpers: run the `osls` CLI (`sls`) of node_modules like a user would.

`sls` runs with the project's virtualenv first on PATH (so `invoke local` finds our
`python3`), dummy AWS credentials and no metadata probe, a throwaway HOME, and none of the
project's variables inherited from the caller's shell: what a function sees is what
serverless.yml and the `-e` options give it. A missing node, npm tool or virtualenv fails
the run; nothing here is ever skipped.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
SLS = REPO / "node_modules" / ".bin" / "sls"
VENV = REPO / ".venv"

# Variables of the project that must not leak from the caller's shell into a function.
_PROJECT_VARIABLES = {f.name.upper() for f in fields(Settings)}


def service_copy(root: Path, dirs: tuple[str, ...] = ("deploy",)) -> Path:
    """A minimal copy of the service under `root`: serverless.yml, requirements.txt and
    `dirs`, with the repository's virtualenv and node_modules linked in (never reinstalled)."""
    tree = root / "agent-rebalance"
    tree.mkdir()
    for name in ("serverless.yml", "requirements.txt"):
        shutil.copy2(REPO / name, tree / name)
    for name in dirs:
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".venv", "node_modules"):
        (tree / name).symlink_to(REPO / name, target_is_directory=True)
    return tree


def run_sls(
    cwd: Path, env: Mapping[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`sls ARGS` (node_modules' osls) in `cwd`, output captured; a failing exit is returned,
    not raised: the caller asserts what it expects."""
    return subprocess.run(
        [str(SLS), *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sls_environ(home: Path | None = None) -> dict[str, str]:
    """The environment `sls` runs in, as the Makefile sets it up, minus the caller's settings.

    `home` replaces HOME (osls keeps caches there); None keeps the caller's, with its pip
    configuration (index mirrors) that a package build must see like `make package` does.
    """
    missing = [str(p) for p in (SLS, VENV / "bin" / "python3") if not p.exists()]
    assert not missing, f"missing {missing}: run `make install` (npm ci and the virtualenv)"
    assert shutil.which("node"), "node is not on PATH: the sls CLI needs Node.js 20+"
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _PROJECT_VARIABLES and not name.startswith("AWS_")
    }
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    if pyenv_root.is_dir():
        env["PYENV_ROOT"] = str(pyenv_root)  # deploy/python.js still finds pyenv's 3.12
    if home is not None:
        env["HOME"] = str(home)
    env.update(
        VIRTUAL_ENV=str(VENV),
        PATH=os.pathsep.join([str(VENV / "bin"), str(SLS.parent), env.get("PATH", "")]),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        NODE_NO_WARNINGS="1",
    )
    return env


def last_json(output: str) -> Any:
    """The JSON document that ends `output` (`invoke local` prints logs first, result last)."""
    text = output.rstrip()
    decoder = json.JSONDecoder()
    for start in reversed([m.start() for m in re.finditer(r"^[\[{]", text, re.MULTILINE)]):
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if end == len(text):
            return value
    raise AssertionError(f"no JSON result at the end of the output:\n{output}")


@dataclass
class Invocation:
    """One `sls invoke local` run: the function's return value and everything printed."""

    result: Any
    output: str

    @property
    def status(self) -> int:
        return int(self.result["statusCode"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.result.get("headers", {}).items()}

    def json(self) -> Any:
        return json.loads(self.result["body"])


class Sls:
    """Runs `sls invoke local` in the repository with events written to a temp folder."""

    def __init__(self, home: Path, workdir: Path) -> None:
        self.environ = sls_environ(home)
        self.workdir = workdir
        self.count = 0

    def invoke(
        self,
        function: str,
        event: Mapping[str, Any],
        env: Mapping[str, str],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> Invocation:
        """`sls invoke local -f function --path <event> -e K=V...`; asserts it exits 0."""
        self.count += 1
        path = self.workdir / f"{self.count:02d}-{function}.json"
        path.write_text(json.dumps(event))
        args = ["invoke", "local", "-f", function, "--path", str(path)]
        for name, value in env.items():
            args += ["-e", f"{name}={value}"]
        if context is not None:
            args += ["--context", json.dumps(context)]
        run = run_sls(REPO, self.environ, *args, timeout=90)
        output = run.stdout + run.stderr
        assert run.returncode == 0, f"sls {' '.join(args)} failed ({run.returncode}):\n{output}"
        return Invocation(last_json(run.stdout), output)


def load_event(name: str) -> dict[str, Any]:
    """A sample event of `events/`, as a fresh copy."""
    return copy.deepcopy(json.loads((EVENTS / name).read_text()))


def with_bearer(event: dict[str, Any], token: str) -> dict[str, Any]:
    """The event with its (expired) sample token replaced by `token`."""
    event = copy.deepcopy(event)
    event["headers"]["authorization"] = f"Bearer {token}"
    return event


def for_job(event: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The status event aimed at `job_id`: path, raw path and path parameters agree."""
    event = copy.deepcopy(event)
    path = f"/api/agent/rebalance/{job_id}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"jobId": job_id}
    return event


# Realistic secret values, made anew each run: in the shell of `make package` (where stage
# dev would read them) and in SSM for the deploy tests; no artifact may carry any of them.
SECRETS = {
    "UPSTASH_REDIS_REST_URL": "https://eu1-sure-hawk-31337.upstash.io",
    "UPSTASH_REDIS_REST_TOKEN": "AXrtAAIjcDE" + secrets.token_urlsafe(30),
    "AUTH_JWT_SECRET": secrets.token_hex(32),
    "METRICS_SCRAPE_TOKEN": secrets.token_hex(32),
    "REBALANCE_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(24),
}
# Where serverless.yml names them, for stage prod.
PARAMETERS = {
    "UPSTASH_REDIS_REST_URL": "/agent-rebalance/prod/upstash-url",
    "UPSTASH_REDIS_REST_TOKEN": "/agent-rebalance/prod/upstash-token",
    "AUTH_JWT_SECRET": "/agent-rebalance/prod/auth-jwt-secret",
    "METRICS_SCRAPE_TOKEN": "/agent-rebalance/prod/metrics-scrape-token",
    "REBALANCE_WEBHOOK_SECRET": "/agent-rebalance/prod/webhook-secret",
}


@dataclass
class Build:
    """The output of `make package STAGE=prod` in a copy of the tree."""

    tree: Path
    zip_path: Path
    names: list[str]
    template: dict[str, Any]
    output: str

    @property
    def folder(self) -> Path:
        return self.zip_path.parent

    def read(self, name: str) -> bytes:
        with zipfile.ZipFile(self.zip_path) as archive:
            return archive.read(name)
