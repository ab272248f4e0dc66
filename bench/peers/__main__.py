"""`make bench-peers`: our drain at its defaults beside BullMQ and arq, on one embedded Valkey.

Each peer drains the same number of no-op jobs from the same server in the same run, in
interleaved rounds; the table gives the median jobs/s of each, its ratio to our drain, and
the Valkey commands each spent per job (`INFO commandstats`, which counts commands inside
scripts too: what Upstash would bill). Our drain goes through the Upstash-compatible gateway
over REST, as in production; the peers talk TCP straight to Valkey. Queuing the jobs is not
timed. Writes `bench/peers.md` and prints it; exits 1 if our drain is slower than BullMQ or
spends more commands per job than any peer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"


@dataclass
class Peer:
    name: str
    add: Callable[[int], object]
    work: Callable[[], float]  # seconds to drain what `add` queued
    rates: list[float] = field(default_factory=list)
    commands: list[float] = field(default_factory=list)


def _run_json(args: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    answer: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench-peers")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    from bench.__main__ import TOKEN
    from core import keys
    from core.drain import DrainOptions, drain
    from core.jobs import Job
    from core.processors.simulated import noop
    from core.queue import QueuePolicy
    from core.redis import RestClient
    from core.settings import Settings
    from devstack.billing import command_counts
    from devstack.stack import local_stack

    with local_stack(token=TOKEN, own_process=True) as stack:
        backend = stack.backend
        client = RestClient(stack.url, stack.token)
        env = {**os.environ, "PEER_REDIS_URL": stack.redis_url}
        defaults = Settings.from_env(stack.env())
        options = DrainOptions.from_settings(defaults)
        options = DrainOptions(**{**options.__dict__, "idle_exit_ms": 0, "safety_margin_ms": 0})
        q = keys.REQUEST_QUEUE

        def ours_add(n: int) -> None:
            pipe = backend.pipeline(transaction=False)
            for i in range(n):
                job = Job(id=f"{i:032x}", payload={"i": i}, queue=q, public_key=f"w{i}")
                pipe.lpush(q, job.to_json())
            pipe.zadd(keys.schedule_key(q), {keys.QUEUE_MARKER: 0})
            pipe.execute()

        def ours_work() -> float:
            started = time.perf_counter()
            policy = QueuePolicy.from_settings(defaults)
            drain(client, noop, lambda: 600_000, policy=policy, options=options)
            return time.perf_counter() - started

        def node(mode: str, *rest: str) -> dict[str, float]:
            return _run_json(["node", str(HERE / "bullmq_drain.mjs"), mode, *rest], env)

        def arq(mode: str, *rest: str) -> dict[str, float]:
            return _run_json([str(PEERS_PYTHON), str(HERE / "arq_drain.py"), mode, *rest], env)

        peers = [
            Peer(f"agent-rebalance drain (defaults: batch {options.batch_size}, concurrency "
                 f"{options.concurrency}; REST via the gateway)", ours_add, ours_work),
            Peer("BullMQ 6.7 (concurrency 100, TCP)", lambda n: node("add", str(n)),
                 lambda: node("work")["seconds"]),
            Peer("arq 0.28 (max_jobs 100, TCP)", lambda n: arq("add", str(n)),
                 lambda: arq("work")["seconds"]),
        ]  # fmt: skip
        for round_ in range(args.rounds):
            for peer in peers:
                backend.flushall()
                peer.add(args.jobs)
                before = sum(command_counts(backend).values())
                seconds = peer.work()
                spent = sum(command_counts(backend).values()) - before
                peer.rates.append(args.jobs / seconds)
                peer.commands.append(spent / args.jobs)
                print(f"round {round_ + 1}: {peer.name}: {args.jobs / seconds:,.0f} jobs/s",
                      flush=True)  # fmt: skip
        client.close()

    ours = statistics.median(peers[0].rates)
    lines = [
        f"# Drain throughput beside peers ({args.jobs:,} no-op jobs, median of "
        f"{args.rounds} interleaved rounds, one embedded Valkey)",
        "",
        "| queue | jobs/s | vs our drain | Valkey commands per job |",
        "|---|---|---|---|",
    ]
    for peer in peers:
        rate = statistics.median(peer.rates)
        lines.append(
            f"| {peer.name} | {rate:,.0f} | {rate / ours:.2f}x | "
            f"{statistics.median(peer.commands):.2f} |"
        )
    table = "\n".join(lines) + "\n"
    (ROOT / "bench" / "peers.md").write_text(table)
    print(table, end="")
    faster = ours >= statistics.median(peers[1].rates)
    cheaper = all(
        statistics.median(peers[0].commands) < statistics.median(p.commands) for p in peers[1:]
    )
    return 0 if faster and cheaper else 1


if __name__ == "__main__":
    sys.exit(main())
