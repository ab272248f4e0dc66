"""`rebalance worker`: the agents' long-running consumer of the rebalance queue.

Runs the configured `REBALANCE_PROCESSOR` through `start_polling_worker`. On SIGTERM or
SIGINT it finishes the job in hand, acknowledges it, and exits 0. It claims one job at a
time, so no job is ever left leased-but-unstarted by a stop. Redis faults and outages do not
stop it: it logs each failure and retries with capped exponential backoff (0.1 s doubling
to 5 s). It exits non-zero only for bad settings (2) or if it ever ended by itself (1).
"""

from __future__ import annotations

import argparse
import signal
import threading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", default=None, help="queue name (default: the rebalance queue)")


def run(args: argparse.Namespace) -> int:
    from core import keys
    from core.log import configure, event, get_logger
    from core.processors import load_processor
    from core.settings import get_settings
    from core.worker import start_polling_worker

    settings = get_settings()
    configure(settings.log_level)
    processor = load_processor(settings.rebalance_processor)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = start_polling_worker(
        args.queue or keys.REQUEST_QUEUE,
        processor,
        interval_ms=settings.drain_poll_interval_ms,
        max_interval_ms=settings.drain_poll_max_interval_ms,
        empty_backoff_factor=settings.drain_backoff_factor,
    )
    print("worker started; Ctrl-C to stop", flush=True)
    while not stop.wait(0.5) and worker.running:
        pass
    worker.stop()
    event(get_logger("cli.worker"), "worker.stopped", handled=worker.handled)
    print(f"worker stopped after {worker.handled} job(s)", flush=True)
    # 0 only for a stop that was asked for; a worker that ended by itself is a failure.
    return 0 if stop.is_set() else 1
