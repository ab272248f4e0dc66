"""The `rebalance` dispatcher: every documented subcommand exists and loads on its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli.main import COMMANDS, main

DOCUMENTED = {"gateway", "drain", "worker", "dlq", "token", "check"}


def test_every_documented_subcommand_is_there() -> None:
    assert set(COMMANDS) == DOCUMENTED


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_each_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert COMMANDS[name][1] in capsys.readouterr().out


def test_the_console_script_loads_only_the_chosen_module() -> None:
    probe = (
        "import sys; from cli.main import main\n"
        "try:\n    main(['token', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('cli.')))"
    )
    out = (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert out == "['cli.main', 'cli.token']"
