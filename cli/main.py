"""`rebalance`: the console script. Each subcommand lives in its own module, loaded on use."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing `add_arguments(parser)` and `run(args) -> int`
COMMANDS = {
    "gateway": ("cli.gateway", "serve the Upstash-compatible REST gateway"),
    "drain": ("cli.drain", "run one drain invocation, like the scheduled Lambda"),
    "worker": ("cli.worker", "long-running consumer of the rebalance queue"),
    "dlq": ("cli.dlq", "list, replay or purge dead-lettered jobs"),
    "token": ("cli.token", "mint a development JWT"),
    "check": ("cli.check", "smoke checks against the configured Upstash"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported: a fast start, and one broken
    subcommand cannot take the others down."""
    parser = argparse.ArgumentParser(prog="rebalance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.errors import ConfigError, RebalanceError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as exc:  # a setting to fix, not a bug: say which, no traceback
        print(f"rebalance {args.command}: {exc}", file=sys.stderr)
        return 2
    except RebalanceError as exc:
        print(f"rebalance {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
