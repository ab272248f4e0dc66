"""Fixtures of the end-to-end tests: one `sls` runner and one `make package` per session."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import REPO, SECRETS, Build, Sls, sls_environ

_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    ".serverless",
    ".requirements-cache",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".coverage*",
    "*.egg-info",
)


@pytest.fixture(scope="session")
def sls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sls]:
    yield Sls(tmp_path_factory.mktemp("sls-home"), tmp_path_factory.mktemp("sls-events"))


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    """`make package STAGE=prod` in a copy of the tree, with the secrets in its shell.

    The copy keeps a concurrent build in the repository from interfering; the virtualenv,
    node_modules and `.requirements-cache` are linked in; stale 3.11 bytecode is planted in
    `core/` as a developer's tree would have it.
    """
    tree = tmp_path_factory.mktemp("package") / "agent-rebalance"
    shutil.copytree(REPO, tree, ignore=_COPY_IGNORE, symlinks=True)  # copy2 keeps mtimes
    (REPO / ".requirements-cache").mkdir(exist_ok=True)
    for name in (".venv", "node_modules", ".requirements-cache"):
        (tree / name).symlink_to(REPO / name, target_is_directory=True)
    stale = tree / "core" / "__pycache__" / "settings.cpython-311.pyc"
    stale.parent.mkdir()
    stale.write_bytes(b"stale bytecode of another interpreter")
    env = {**sls_environ(), **SECRETS}
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # a user's top-level make, not a sub-make
        env.pop(name, None)
    # The linked virtualenv is the repository's: never reinstall it from the copy (that would
    # point its scripts and its editable install at this temporary tree).
    run = subprocess.run(
        [
            "make",
            "-o",
            ".venv/.installed",
            "-o",
            "node_modules/.installed",
            "package",
            "STAGE=prod",
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"make package failed ({run.returncode}):\n{output}"
    zip_path = tree / ".serverless" / "agent-rebalance.zip"
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    template = json.loads(
        (tree / ".serverless" / "cloudformation-template-update-stack.json").read_text()
    )
    yield Build(tree, zip_path, names, template, output)
