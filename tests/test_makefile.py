"""`make clean` removes what the build and the tools generate, and nothing the repository
tracks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_clean_removes_generated_files_and_keeps_every_tracked_one(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    tree = tmp_path / "agent-rebalance"
    for name in tracked:
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    generated = [
        ".venv/bin/python",
        ".hypothesis/examples/x",
        ".ruff_cache/x",
        ".mypy_cache/x",
        "agent_rebalance.egg-info/PKG-INFO",
        "bench/results.md",
        "core/__pycache__/jobs.cpython-311.pyc",
        ".coverage",
    ]
    for name in generated:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("generated")
    subprocess.run(["make", "clean"], cwd=tree, capture_output=True, check=True)
    assert [name for name in generated if (tree / name).exists()] == []
    assert not (tree / "core" / "__pycache__").exists()
    missing = [name for name in tracked if (REPO / name).is_file() and not (tree / name).exists()]
    assert missing == []
