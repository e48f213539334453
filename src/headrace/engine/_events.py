"""Engine events: frozen dataclasses that observers turn into progress, logs and metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RunStarted:
    pipeline: str
    step_ids: tuple[str, ...]
    total: int | None  # source size (bytes or rows) when known, for an ETA
    unit: str


@dataclass(frozen=True)
class BatchRead:
    records: int
    rejected: int
    progress: int  # source position in the unit of RunStarted.total


@dataclass(frozen=True)
class BatchProcessed:
    step_id: str
    records_in: int
    records_out: int
    filtered: int
    dead: int
    seconds: float


@dataclass(frozen=True)
class BatchWritten:
    records: int
    seconds: float = 0.0


@dataclass(frozen=True)
class RetryScheduled:
    """A call failed with a transient error and will be tried again after ``delay``."""

    step_id: str
    attempt: int  # the attempt that failed, from 1
    delay: float
    reason: str  # error class name, e.g. TimeoutError


@dataclass(frozen=True)
class BreakerChanged:
    step_id: str
    key: str
    state: str  # closed | open | half_open


@dataclass(frozen=True)
class RateLimited:
    """A call waited ``seconds`` for its rate limit."""

    step_id: str
    key: str
    seconds: float


@dataclass(frozen=True)
class EdgeFill:
    """Batches waiting on one edge (channel) of the pipeline, and its capacity."""

    edge: str  # "<from>-><to>"
    queued: int
    capacity: int


@dataclass(frozen=True)
class Sampled:
    """A periodic snapshot of gauges: channel fill per edge, calls in flight per step."""

    edges: tuple[EdgeFill, ...]
    in_flight: tuple[tuple[str, int], ...]
    #: (plugin id, name, total so far) of the counters plugins keep with ``context.emit``.
    plugin_metrics: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True)
class CheckpointCommitted:
    """Every record before ``position`` is in the sink or the dead-letter output, durably."""

    position: int
    records: int  # source records committed so far, in this run and the runs it resumes


@dataclass(frozen=True)
class StopRequested:
    reason: str


@dataclass(frozen=True)
class RunFinished:
    summary: dict[str, Any]


Event = (
    RunStarted | BatchRead | BatchProcessed | BatchWritten | StopRequested | RunFinished
    | RetryScheduled | BreakerChanged | RateLimited | Sampled | CheckpointCommitted
)


class Observer(Protocol):
    def __call__(self, event: Event) -> None: ...


class EventBus:
    """Calls each observer with each event; observers must be quick and must not raise."""

    def __init__(self, observers: list[Callable[[Event], None]] | None = None) -> None:
        self.observers = list(observers or [])

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            observer(event)
