"""The original consumer API: `dequeue_once` (REST polling, TCP blocking) and the worker."""

from __future__ import annotations

import threading
import time

import valkey

from core import keys, queue
from core.jobs import Job
from core.queue import Outcome, QueuePolicy
from core.redis import RestClient, TcpClient
from core.worker import dequeue_once, start_polling_worker
from tests.conftest import Stack

NAME = "emails"


def test_enqueue_takes_any_queue_name_under_the_prefix(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """A plain name becomes an escaped `agent:rebalance:` key; nothing else is written."""
    queue.enqueue("weird name*?", {"to": "x"}, client=rest)
    lists = [k for k in backend.keys("*") if backend.type(k) == "list"]
    assert lists == ["agent:rebalance:weird%20name%2A%3F"]


def test_dequeue_once_over_rest_claims_then_times_out(
    rest: RestClient, policy: QueuePolicy, env: dict[str, str]
) -> None:
    """One job comes back leased; on an empty queue it waits the timeout and says None."""
    job_id = queue.enqueue(NAME, {"n": 1}, client=rest)
    job = dequeue_once(NAME, 1.0, client=rest, policy=policy)
    assert job is not None and job.id == job_id and job.attempts == 1
    queue.ack(rest, NAME, [Outcome(job, "ok", 1.0)], policy)
    started = time.monotonic()
    assert dequeue_once(NAME, 0.3, client=rest, policy=policy) is None
    assert time.monotonic() - started >= 0.3


def test_dequeue_once_over_tcp_blocks_until_a_job_arrives(
    stack: Stack, rest: RestClient, policy: QueuePolicy, env: dict[str, str]
) -> None:
    """With a TCP connection it waits on the list instead of polling, and wakes on a push."""
    tcp = TcpClient(stack.redis_url)
    pusher = threading.Timer(0.3, lambda: queue.enqueue(NAME, {"late": True}, client=rest))
    pusher.start()
    job = dequeue_once(NAME, 5.0, tcp=tcp, policy=policy)
    pusher.join()
    assert job is not None and job.payload == {"late": True}
    assert tcp.round_trips <= 4  # claim, block, claim — not a polling loop
    tcp.close()


def test_polling_worker_handles_requeues_and_stops(
    rest: RestClient, backend: valkey.Valkey, env: dict[str, str]
) -> None:
    """True = handled; False = requeued and delivered again; stop() ends the thread."""
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def handler(job: Job) -> bool:
        seen.append((job.payload["n"], job.attempts))
        if len(seen) == 3:
            done.set()
        return not (job.payload["n"] == 1 and job.attempts == 1)

    ids = [queue.enqueue(NAME, {"n": n}, client=rest) for n in range(2)]
    policy = QueuePolicy(retry_base_ms=1, retry_max_ms=2)
    worker = start_polling_worker(
        NAME, handler, interval_ms=10, max_interval_ms=20, client=rest, policy=policy
    )
    assert done.wait(10)
    worker.stop(5)
    assert not worker.running
    assert seen == [(0, 1), (1, 1), (1, 2)]
    statuses = {backend.get(keys.job_key(i)) for i in ids}
    assert all('"status":"succeeded"' in s for s in statuses)


def test_the_original_api_needs_no_client(env: dict[str, str], backend: valkey.Valkey) -> None:
    """`enqueue(queue, data)` and `dequeue_once(queue, timeout_s)` use the environment's Upstash."""
    from core import dequeue_once as take
    from core import enqueue

    job_id = enqueue("reports", {"week": 48})
    job = take("reports", 1.0)
    assert job is not None and (job.id, job.payload) == (job_id, {"week": 48})
    assert backend.hlen(keys.leased_key("reports")) == 1
