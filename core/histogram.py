"""The execution-time histogram: log buckets of 2% width, merged from Redis hashes.

Field `i` counts times in (1.02^(i-1), 1.02^i] ms, `z` times under 1 µs, `sum_us` the exact
sum (written by `_metrics.lua`). The bucket midpoint is within 1% of every value in it, so
nearest-rank percentiles are within 1%, and the average is exact to the microsecond.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GAMMA = 1.02  # the bucket ratio; `_metrics.lua` computes indexes with the same value


@dataclass
class Histogram:
    """A merged log-bucket histogram: bucket index -> count, plus the exact sum."""

    buckets: dict[int, int] = field(default_factory=dict)
    zero: int = 0  # timings under 1 µs
    sum_us: int = 0

    @classmethod
    def merge(cls, hashes: Iterable[Mapping[str, Any]]) -> Histogram:
        merged = cls()
        for fields in hashes:
            for name, raw in fields.items():
                merged._add(str(name), int(raw))
        return merged

    def _add(self, name: str, value: int) -> None:
        if name == "sum_us":
            self.sum_us += value
        elif name == "z":
            self.zero += value
        else:
            try:
                index = int(name)
            except ValueError:
                return  # a field this version does not know: ignore rather than fail a read
            self.buckets[index] = self.buckets.get(index, 0) + value

    @property
    def count(self) -> int:
        return self.zero + sum(self.buckets.values())

    def mean_ms(self) -> float:
        n = self.count
        return self.sum_us / n / 1000 if n else 0.0

    def percentile_ms(self, p: float) -> float:
        """Nearest-rank percentile, estimated by its bucket's midpoint (within 1%)."""
        n = self.count
        if n == 0:
            return 0.0
        rank = max(1, math.ceil(p / 100 * n))
        seen = self.zero
        if seen >= rank:
            return 0.0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return 2 * GAMMA**index / (1 + GAMMA)
        return 2 * GAMMA ** max(self.buckets) / (1 + GAMMA)  # unreachable unless counts < 0

    def cumulative(self, bounds_s: Sequence[float]) -> list[tuple[float, int]]:
        """Counts of timings ≤ each bound (seconds): a fine bucket counts under a bound only
        when its upper edge is ≤ the bound, so a bucket never claims a value above it."""
        edges = sorted(self.buckets)
        out, seen, j = [], self.zero, 0
        for bound in bounds_s:
            while j < len(edges) and GAMMA ** edges[j] <= bound * 1000 * (1 + 1e-12):
                seen += self.buckets[edges[j]]
                j += 1
            out.append((bound, seen))
        return out
