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


@dataclass(frozen=True)
class StopRequested:
    reason: str


@dataclass(frozen=True)
class RunFinished:
    summary: dict[str, Any]


Event = RunStarted | BatchRead | BatchProcessed | BatchWritten | StopRequested | RunFinished


class Observer(Protocol):
    def __call__(self, event: Event) -> None: ...


class EventBus:
    """Calls each observer with each event; observers must be quick and must not raise."""

    def __init__(self, observers: list[Callable[[Event], None]] | None = None) -> None:
        self.observers = list(observers or [])

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            observer(event)
