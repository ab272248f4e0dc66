"""`sls deploy` refuses functions whose settings are missing or would ship a secret's value,
before building anything.

Runs in a minimal copy of the service with dummy AWS credentials: were the guard missing,
the deploy would go on to package and then fail on AWS, never with these messages.
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


def _deploy(
    tmp: pytest.TempPathFactory, env_extra: dict[str, str], blank: str = ""
) -> tuple[Path, str]:
    """`sls deploy` in a copy, with `blank`'s line of serverless.yml set to '' if given."""
    tree = _service_copy(tmp.mktemp("guard"))
    if blank:
        config = tree / "serverless.yml"
        text = config.read_text()
        line = next(line for line in text.splitlines() if line.strip().startswith(blank + ":"))
        config.write_text(text.replace(line, f"{line.split(':')[0]}: ''"))
    env = {**sls_environ(tmp.mktemp("home")), **env_extra}
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
    assert not (tree / ".serverless").exists() or not list((tree / ".serverless").glob("*.zip"))
    assert not (tree / ".requirements-cache").exists()
    return tree, output


def test_deploy_of_secret_values_from_the_shell_is_refused_naming_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Stage dev with secrets exported (for `sls invoke local`): nothing is built or sent."""
    _, output = _deploy(
        tmp_path_factory,
        {"AUTH_JWT_SECRET": "jwt-secret-from-shell", "UPSTASH_REDIS_REST_TOKEN": "AXrt-shell"},
    )
    assert "Refusing to deploy secret values in plain text" in output
    for function in ("submit", "status", "metrics"):
        assert f"  {function}: UPSTASH_REDIS_REST_TOKEN, AUTH_JWT_SECRET\n" in output
    assert "  drain: UPSTASH_REDIS_REST_TOKEN\n" in output
    assert "jwt-secret-from-shell" not in output and "AXrt-shell" not in output


def test_deploy_without_a_parameter_name_is_refused_naming_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A required setting with neither a value nor a parameter name: every function is named."""
    _, output = _deploy(tmp_path_factory, {}, blank="upstashTokenParameter")
    assert "Refusing to deploy functions with empty settings" in output
    for function in ("submit", "status", "metrics", "drain"):
        assert f"  {function}: UPSTASH_REDIS_REST_TOKEN\n" in output
    assert "AUTH_JWKS_URL" not in output  # the JWT secret's parameter name is there
