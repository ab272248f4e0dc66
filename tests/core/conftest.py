"""Factories for queue and drain tests: policies, a fake Lambda context, queue inspection."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from core import keys
from core.queue import QueuePolicy

Q = keys.REQUEST_QUEUE


@pytest.fixture
def policy() -> QueuePolicy:
    return QueuePolicy(lease_ms=30_000, max_attempts=3, retry_base_ms=1, retry_max_ms=5)


@dataclass
class FakeContext:
    """A Lambda context whose remaining time runs down with the real clock."""

    budget_ms: int
    aws_request_id: str = "test-request"

    def __post_init__(self) -> None:
        self._ends = time.monotonic() + self.budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


@pytest.fixture
def lambda_context() -> Callable[[int], FakeContext]:
    return FakeContext
