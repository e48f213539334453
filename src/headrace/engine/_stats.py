"""Counting records per step, and the run summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_GROWTH = 1.02  # bucket width: percentiles within 1% of the true latency
_FLOOR = 1e-6  # seconds; faster batches share the first bucket


class Latencies:
    """Batch latencies in logarithmic buckets: constant memory however long the run, and
    percentiles within 1% (a bounded histogram, not a list that grows per batch)."""

    __slots__ = ("buckets", "count")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0

    def add(self, seconds: float) -> None:
        index = int(math.log(max(seconds, _FLOOR) / _FLOOR, _GROWTH))
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def percentile(self, q: float) -> float:
        """Seconds below which ``q`` percent of the batches took (a bucket's midpoint)."""
        if not self.count:
            return 0.0
        rank = q / 100 * (self.count - 1)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen > rank:
                return _FLOOR * _GROWTH ** (index + 0.5)
        return _FLOOR * _GROWTH ** (max(self.buckets) + 0.5)


@dataclass
class StepStats:
    id: str
    records_in: int = 0
    records_out: int = 0
    filtered: int = 0
    dead: int = 0
    retries: int = 0
    latencies: Latencies = field(default_factory=Latencies)  # seconds per batch

    def as_dict(self) -> dict[str, Any]:
        p50, p95, p99 = (self.latencies.percentile(q) * 1000 for q in (50, 95, 99))
        return {
            "id": self.id,
            "in": self.records_in,
            "out": self.records_out,
            "filtered": self.filtered,
            "dead": self.dead,
            "retries": self.retries,
            "batches": len(self.latencies),
            "p50_ms": round(p50, 3),
            "p95_ms": round(p95, 3),
            "p99_ms": round(p99, 3),
        }


@dataclass
class RunStats:
    """Counters for one run; ``records_in == out + filtered + dead`` when it ends cleanly."""

    records_in: int = 0
    records_out: int = 0
    source_dead: int = 0
    sink_dead: int = 0  # records a sink refused for a reason of their own (an HTTP 4xx)
    steps: list[StepStats] = field(default_factory=list)

    @property
    def records_filtered(self) -> int:
        return sum(s.filtered for s in self.steps)

    @property
    def records_dead(self) -> int:
        return self.source_dead + self.sink_dead + sum(s.dead for s in self.steps)

    def summary(self, status: str, duration_s: float, **extra: Any) -> dict[str, Any]:
        return {
            "status": status,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "records_filtered": self.records_filtered,
            "records_dead": self.records_dead,
            "duration_s": round(duration_s, 3),
            "steps": [s.as_dict() for s in self.steps],
            **extra,
        }
