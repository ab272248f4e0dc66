"""`rebalance drain [--budget-seconds N]`: one drain invocation, exactly like the Lambda.

Prints the summary as one JSON line, last on stdout, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-seconds", type=float, default=60.0,
                        help="time the invocation may take, like a Lambda timeout (default 60)")


def run(args: argparse.Namespace) -> int:
    from core.settings import get_settings
    from handlers.drain import handler

    # The budget is the drain's working time: the safety margin that a Lambda keeps for
    # the last ack comes on top, so `--budget-seconds 2` really drains for two seconds.
    margin_s = get_settings().drain_safety_margin_ms / 1000
    ends = time.monotonic() + args.budget_seconds + margin_s
    context = SimpleNamespace(
        aws_request_id=f"cli-{int(time.time() * 1000)}",
        get_remaining_time_in_millis=lambda: max(0, int((ends - time.monotonic()) * 1000)),
    )
    summary = handler({"source": "rebalance.cli", "detail-type": "Scheduled Event"}, context)
    print(json.dumps(summary), flush=True)
    return 0
