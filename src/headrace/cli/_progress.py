"""Observers of engine events that show progress: a rich display on a terminal, periodic
one-line summaries elsewhere. Both only read counters; they never slow the engine down."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from headrace.engine import (
    BatchProcessed,
    BatchRead,
    BatchWritten,
    Event,
    RunFinished,
    RunStarted,
    StopRequested,
)


@dataclass
class Counters:
    """What both displays show, folded from events."""

    total: int | None = None
    progress: int = 0
    read: int = 0
    written: int = 0
    dead: int = 0
    step_out: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    def apply(self, event: Event) -> None:
        if isinstance(event, BatchRead):
            self.read += event.records + event.rejected
            self.dead += event.rejected
            self.progress = event.progress
        elif isinstance(event, BatchProcessed):
            self.step_out[event.step_id] = self.step_out.get(event.step_id, 0) + event.records_out
            self.dead += event.dead
        elif isinstance(event, BatchWritten):
            self.written += event.records


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


class LineProgress:
    """Prints ``headrace: ...`` to stderr at most every ``interval`` seconds."""

    def __init__(self, stream: IO[str], interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.counters = Counters()
        self._last = 0.0

    def __call__(self, event: Event) -> None:
        c = self.counters
        if isinstance(event, RunStarted):
            c.total, c.started = event.total, self.clock()
            self._last = c.started
            return
        if isinstance(event, StopRequested):
            print(f"headrace: {event.reason}", file=self.stream, flush=True)
            return
        c.apply(event)
        now = self.clock()
        if now - self._last >= self.interval and not isinstance(event, RunFinished):
            self._last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        c = self.counters
        elapsed = max(now - c.started, 1e-9)
        done = f" ({100 * c.progress / c.total:.0f}%)" if c.total else ""
        return (f"headrace: {c.read:,} records read{done}, {c.written:,} written, "
                f"{c.dead:,} dead, {human(c.read / elapsed)} records/s")


class RichProgress:
    """A live progress bar with per-step counts, for a terminal (stderr)."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.counters = Counters()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self.task: Any = None
        self.steps: tuple[str, ...] = ()

    def __call__(self, event: Event) -> None:
        c = self.counters
        if isinstance(event, RunStarted):
            c.total, c.started = event.total, time.monotonic()
            self.steps = event.step_ids
            self.progress.start()
            self.task = self.progress.add_task(event.pipeline, total=event.total, stats="")
            return
        if isinstance(event, StopRequested):
            self.progress.console.print(f"[yellow]{event.reason}")
            return
        if isinstance(event, RunFinished):
            if self.task is not None:
                if event.summary.get("status") == "ok" and c.total:
                    self.progress.update(self.task, completed=c.total)
                self.progress.stop()
            return
        c.apply(event)
        if self.task is None:
            return
        elapsed = max(time.monotonic() - c.started, 1e-9)
        parts = [f"{human(c.read)} in", *(f"{s} {human(c.step_out.get(s, 0))}" for s in
                                            self.steps), f"{human(c.written)} out"]
        if c.dead:
            parts.append(f"[red]{c.dead:,} dead[/]")
        parts.append(f"{human(c.read / elapsed)}/s")
        self.progress.update(self.task, completed=c.progress, stats=" · ".join(parts))
