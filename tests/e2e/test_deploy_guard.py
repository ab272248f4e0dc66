"""`sls deploy` refuses functions whose settings resolved empty, before building anything.

Runs in a minimal copy of the service with dummy AWS credentials: were the guard missing,
the deploy would go on to package and then fail on AWS, never with this message.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, sls_environ

pytestmark = pytest.mark.slow


def _service_copy(root: Path) -> Path:
    tree = root / "agent-rebalance"
    tree.mkdir()
    for name in ("serverless.yml", "requirements.txt"):
        shutil.copy2(REPO / name, tree / name)
    for name in ("deploy", "core", "handlers"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".venv", "node_modules"):
        (tree / name).symlink_to(REPO / name, target_is_directory=True)
    return tree


def test_deploy_with_empty_settings_is_refused_naming_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Stage dev with nothing exported: every function is named with what it lacks."""
    tree = _service_copy(tmp_path_factory.mktemp("guard"))
    env = sls_environ(tmp_path_factory.mktemp("home"))
    env["AUTH_JWT_SECRET"] = "set-but-not-enough"  # the Upstash variables stay unset
    run = subprocess.run(
        ["sls", "deploy"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "Refusing to deploy functions with empty settings" in output
    for function in ("submit", "status", "metrics", "drain"):
        assert f"  {function}: UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN\n" in output
    assert "AUTH_JWKS_URL" not in output  # the secret is set: auth is not reported
    assert "export them" in output
    assert not (tree / ".serverless").exists() or not list((tree / ".serverless").glob("*.zip"))
    assert not (tree / ".requirements-cache").exists()
