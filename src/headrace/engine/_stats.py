"""Counting records per step, and the run summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StepStats:
    id: str
    records_in: int = 0
    records_out: int = 0
    filtered: int = 0
    dead: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds per batch

    def as_dict(self) -> dict[str, Any]:
        if self.latencies:
            p50, p95, p99 = (float(v) * 1000 for v in np.percentile(self.latencies, [50, 95, 99]))
        else:
            p50 = p95 = p99 = 0.0
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
