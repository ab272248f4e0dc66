"""`rebalance check redis|queue|metrics`: smoke checks against the configured Upstash.

Each target is a module `cli.check_<target>` exposing
`run_checks(settings) -> list[tuple[name, passed, detail]]`, imported only when asked for.
One line per check, `PASS name` or `FAIL name: reason`; the exit status is 1 if any failed,
2 if the settings themselves are invalid.
"""

from __future__ import annotations

import argparse
import importlib

TARGETS = ("redis", "queue", "metrics")

Result = tuple[str, bool, str]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=TARGETS, help="what to check")


def run(args: argparse.Namespace) -> int:
    from core.errors import ConfigError
    from core.settings import Settings

    try:
        settings = Settings.from_env()
    except ConfigError as exc:  # a setting to fix: exit 2, like every other command
        report([("config", False, str(exc))])
        return 2
    try:
        module = importlib.import_module(f"cli.check_{args.target}")
    except ModuleNotFoundError as exc:
        return report([(args.target, False, f"no checks available ({exc})")])
    return report(module.run_checks(settings))


def report(results: list[Result]) -> int:
    """Print one line per check; 0 when all passed (and there was at least one), else 1."""
    for name, passed, detail in results:
        print(f"PASS {name}" if passed else f"FAIL {name}: {detail}", flush=True)
    return 0 if results and all(passed for _, passed, _ in results) else 1
