"""A processor that records when each job starts and ends, for overlap and order checks.

`REBALANCE_PROCESSOR=tests.support.recorder:process` with `RECORD_FILE` (one JSON line per
event, appended with O_APPEND: whole lines even from several processes) and
`RECORD_SLEEP_MS` (how long each job takes).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def process(job: Any) -> None:
    started = time.time()
    _write({"event": "start", "id": job.id, "wallet": job.public_key, "t": started})
    time.sleep(int(os.environ.get("RECORD_SLEEP_MS", "20")) / 1000)
    _write({"event": "end", "id": job.id, "wallet": job.public_key, "t": time.time()})


def _write(entry: dict[str, Any]) -> None:
    fd = os.open(os.environ["RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def read(path: str) -> list[dict[str, Any]]:
    with open(path) as records:
        return [json.loads(line) for line in records if line.strip()]
