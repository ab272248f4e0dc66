"""`rebalance drain [--budget-seconds N]`: one drain invocation, like the scheduled Lambda.

It claims, processes and acknowledges until the queue has been idle for a second (or
`DRAIN_IDLE_EXIT_MS`, or `--idle-exit-ms`) or the budget is spent, whichever comes first;
`--no-idle-exit` polls until the budget is spent, exactly as the Lambda does by default.
Prints the summary as one JSON line, last on stdout, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import time

DEFAULT_IDLE_EXIT_MS = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=60.0,
        help="time the invocation may take, like a Lambda timeout (default 60)",
    )
    idle = parser.add_mutually_exclusive_group()
    idle.add_argument(
        "--idle-exit-ms",
        type=int,
        default=None,
        help="return after this much idle time (default: DRAIN_IDLE_EXIT_MS, "
        f"else {DEFAULT_IDLE_EXIT_MS})",
    )
    idle.add_argument(
        "--no-idle-exit",
        action="store_true",
        help="keep polling an empty queue until the budget is spent",
    )


def run(args: argparse.Namespace) -> int:
    from core.settings import get_settings
    from devstack.lambda_events import LambdaContext
    from handlers.drain import run_drain

    settings = get_settings()
    if args.no_idle_exit:
        settings = settings.replace(drain_idle_exit_ms=None)
    elif args.idle_exit_ms is not None:
        settings = settings.replace(drain_idle_exit_ms=args.idle_exit_ms)
    elif settings.drain_idle_exit_ms is None:
        settings = settings.replace(drain_idle_exit_ms=DEFAULT_IDLE_EXIT_MS)
    # The budget is the drain's working time: the safety margin that a Lambda keeps for
    # the last ack comes on top, so `--budget-seconds 2` really drains for two seconds.
    budget_ms = int(args.budget_seconds * 1000) + settings.drain_safety_margin_ms
    context = LambdaContext(budget_ms, aws_request_id=f"cli-{int(time.time() * 1000)}")
    summary = run_drain(
        settings, context.get_remaining_time_in_millis, request_id=context.aws_request_id
    )
    print(json.dumps(summary), flush=True)
    return 0
