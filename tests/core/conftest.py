"""Factories for queue and drain tests: policies, queue inspection."""

from __future__ import annotations

import pytest

from core import keys
from core.queue import QueuePolicy

Q = keys.REQUEST_QUEUE


@pytest.fixture
def policy() -> QueuePolicy:
    return QueuePolicy(lease_ms=30_000, max_attempts=3, retry_base_ms=1, retry_max_ms=5)
