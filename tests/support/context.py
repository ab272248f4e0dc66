"""The one fake Lambda context of the tests: what Mangum, our handlers and the drain read."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class FakeContext:
    """A Lambda context whose remaining time runs down from `budget_ms` with the real clock."""

    budget_ms: int = 10_000
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    function_name: str = "test"

    def __post_init__(self) -> None:
        self._ends = time.monotonic() + self.budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))
