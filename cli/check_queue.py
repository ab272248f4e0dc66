"""`rebalance check queue`: the original queue smoke test, on a scratch queue.

Enqueue and claim one job through the same scripts the drain uses, on a scratch queue; the
job is not acknowledged (that would count it in the metrics users read): the scratch keys
are deleted instead.
"""

from __future__ import annotations

import time

from core import keys, queue
from core.errors import RebalanceError
from core.redis import make_client
from core.settings import Settings

SCRATCH = keys.APP + "check:queue"


def run_checks(settings: Settings) -> list[tuple[str, bool, str]]:
    client = make_client(settings)
    policy = queue.QueuePolicy(lease_ms=10_000, max_attempts=1)
    results: list[tuple[str, bool, str]] = []
    marker = {"check": "queue", "at": time.time()}
    try:
        job_id = queue.enqueue(SCRATCH, marker, policy=policy, client=client)
        results.append(("queue enqueue", True, job_id))
        claimed = queue.claim(client, SCRATCH, 1, policy).jobs
        same = len(claimed) == 1 and claimed[0].id == job_id and claimed[0].payload == marker
        results.append(("queue claim", same, "got the job back" if same else f"got {claimed!r}"))
        left = queue.depth(client, SCRATCH)
        moved = left["queued"] == 0 and left["leased"] == 1
        results.append(("queue lease", moved, str(left)))
        client.execute(["DEL", *_scratch_keys(job_id)])
        left = queue.depth(client, SCRATCH)
        results.append(("queue cleanup", not any(left.values()), str(left)))
    except RebalanceError as exc:
        results.append(("queue", False, str(exc)))
    finally:
        client.close()
    return results


def _scratch_keys(job_id: str) -> list[str]:
    return [
        keys.queue_key(SCRATCH),
        keys.schedule_key(SCRATCH),
        keys.leased_key(SCRATCH),
        keys.delayed_key(SCRATCH),
        keys.dead_key(SCRATCH),
        keys.job_key(job_id),
    ]
