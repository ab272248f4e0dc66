"""`rebalance gateway`: the Upstash-compatible REST gateway alone, for local development.

Without `--redis-url` it starts an embedded Valkey and stops it on the way out. Once
listening it prints `UPSTASH_REDIS_REST_URL=...` and `UPSTASH_REDIS_REST_TOKEN=...` (one
line each, flushed: a parent process may read them from a pipe), then serves until SIGINT
or SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from typing import Any

DEFAULT_PORT = 8079


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token clients must send (default: a random one, printed)",
    )
    parser.add_argument(
        "--read-only-token",
        default=None,
        help="optional second token that may only run read commands",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="redis:// URL of the backing server (default: an embedded Valkey)",
    )


def run(args: argparse.Namespace) -> int:
    from devstack.embedded import EmbeddedValkeyError
    from devstack.stack import local_stack

    stop = _stop_on_signals()
    with ExitStack() as running:
        try:
            stack = running.enter_context(
                local_stack(
                    redis_url=args.redis_url,
                    token=args.token,
                    port=args.port,
                    host=args.host,
                    read_only_token=args.read_only_token,
                )
            )
        except (EmbeddedValkeyError, OSError, RuntimeError) as exc:
            print(f"rebalance gateway: {exc}", file=sys.stderr)
            return 1
        print(f"UPSTASH_REDIS_REST_URL={stack.url}", flush=True)
        print(f"UPSTASH_REDIS_REST_TOKEN={stack.token}", flush=True)
        while not stop.wait(0.2):  # a timed wait keeps the main thread responsive to signals
            pass
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
