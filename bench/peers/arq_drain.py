"""arq on the same Valkey, for `make bench-peers` (runs in its own venv: arq pins redis < 6).

`add N` queues N no-op jobs (untimed); `work` drains them with one burst-mode worker at
`max_jobs=100` and prints {"jobs", "seconds"}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

SETTINGS = RedisSettings.from_dsn(os.environ["PEER_REDIS_URL"])


async def noop(_ctx: dict[str, Any], i: int) -> None:
    return None


async def add(count: int) -> None:
    pool = await create_pool(SETTINGS)
    for start in range(0, count, 500):
        await asyncio.gather(
            *(pool.enqueue_job("noop", i) for i in range(start, min(count, start + 500)))
        )
    await pool.aclose()
    print(json.dumps({"jobs": count}))


async def work() -> None:
    worker = Worker(
        functions=[noop], redis_settings=SETTINGS, burst=True, max_jobs=100,
        keep_result=0, poll_delay=0.01, handle_signals=False,
    )  # fmt: skip
    started = time.perf_counter()
    await worker.main()
    seconds = time.perf_counter() - started
    print(json.dumps({"jobs": worker.jobs_complete, "seconds": seconds}))
    await worker.close()


if __name__ == "__main__":
    mode = sys.argv[1]
    asyncio.run(add(int(sys.argv[2])) if mode == "add" else work())
