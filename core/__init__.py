"""The domain, free of Lambda and HTTP.

The original system's generic queue API, for any queue name, is importable from here:
`enqueue(queue, data) -> job_id`, `dequeue_once(queue, timeout_s)` and
`start_polling_worker(queue, handler, interval_ms=500, max_interval_ms=5000,
empty_backoff_factor=1.5)`; they load their modules on first use, so `import core` stays free.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "dequeue_once", "enqueue", "start_polling_worker"]

# The release, stated once: pyproject.toml reads it, the OpenAPI document carries it.
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "enqueue":
        from core.queue import enqueue

        return enqueue
    if name in ("dequeue_once", "start_polling_worker"):
        from core import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")
