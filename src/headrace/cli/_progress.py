"""Observers of engine events that show progress: a rich display on a terminal, periodic
one-line summaries elsewhere. Both only fold events into counters and never raise: a display
that fails says so once in the log and the run goes on."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from headrace.engine import (
    BatchProcessed,
    BatchRead,
    BatchWritten,
    BreakerChanged,
    CheckpointCommitted,
    EdgeFill,
    Event,
    RateLimited,
    RetryScheduled,
    RunFinished,
    RunStarted,
    Sampled,
    StopRequested,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

logger = logging.getLogger("headrace.cli.progress")

SINK = "sink"  # the name the engine gives the sink in edge names ("<step>->sink")
BAR_WIDTH = 8
MAX_BREAKERS = 3  # breakers named in full; the rest are counted


@dataclass
class Counters:
    """What both displays show, folded from events."""

    total: int | None = None
    progress: int = 0
    read: int = 0
    written: int = 0
    dead: int = 0
    step_in: dict[str, int] = field(default_factory=dict)
    step_out: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    retries: dict[str, int] = field(default_factory=dict)
    retry_reasons: dict[tuple[str, str], int] = field(default_factory=dict)  # (step, reason)
    breakers: dict[tuple[str, str], str] = field(default_factory=dict)  # (step, key): not closed
    rate_waits: dict[str, int] = field(default_factory=dict)
    rate_wait_seconds: dict[str, float] = field(default_factory=dict)
    edges: tuple[EdgeFill, ...] = ()  # from the latest Sampled, upstream first
    in_flight: dict[str, int] = field(default_factory=dict)
    checkpoint_records: int | None = None
    checkpoint_position: int | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, Sampled):  # the most frequent event first
            self.edges = event.edges
            self.in_flight = dict(event.in_flight)
        elif isinstance(event, BatchRead):
            self.read += event.records + event.rejected
            self.dead += event.rejected
            self.progress = event.progress
        elif isinstance(event, BatchProcessed):
            step = event.step_id
            self.step_in[step] = self.step_in.get(step, 0) + event.records_in
            self.step_out[step] = self.step_out.get(step, 0) + event.records_out
            self.dead += event.dead
        elif isinstance(event, BatchWritten):
            self.written += event.records
        elif isinstance(event, RetryScheduled):
            self.retries[event.step_id] = self.retries.get(event.step_id, 0) + 1
            reason = (event.step_id, event.reason)
            self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1
        elif isinstance(event, BreakerChanged):
            state = event.state.replace("-", "_")
            if state == "closed":
                self.breakers.pop((event.step_id, event.key), None)
            else:
                self.breakers[(event.step_id, event.key)] = state
        elif isinstance(event, RateLimited):
            step = event.step_id
            self.rate_waits[step] = self.rate_waits.get(step, 0) + 1
            self.rate_wait_seconds[step] = self.rate_wait_seconds.get(step, 0.0) + event.seconds
        elif isinstance(event, CheckpointCommitted):
            self.checkpoint_records = event.records
            self.checkpoint_position = event.position

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

    def edge_into(self, name: str) -> EdgeFill | None:
        """The channel in front of step ``name`` (or of the sink, ``"sink"``)."""
        for edge in self.edges:
            if edge.edge.rpartition("->")[2] == name:
                return edge
        return None

    def fullest_edge(self) -> EdgeFill | None:
        """The edge with the largest share of its capacity waiting, or None when every queue
        is empty. On a tie the one furthest downstream wins: when a slow step backs everything
        up, every queue before it is full, and the last full one is in front of the culprit."""
        best: EdgeFill | None = None
        best_fill = 0.0
        for edge in self.edges:
            if edge.queued <= 0:
                continue
            fill = edge.queued / edge.capacity if edge.capacity > 0 else 1.0
            if fill >= best_fill:
                best, best_fill = edge, fill
        return best

    def open_breakers(self) -> list[str]:
        """``step[key] open`` / ``step half-open`` for each breaker that is not closed, open
        ones first; the key is left out when it is the step (one breaker for the step)."""
        items = sorted(self.breakers.items(), key=lambda kv: (kv[1] != "open", kv[0]))
        return [f"{breaker_name(step, key)} {state.replace('_', '-')}"
                for (step, key), state in items]


def breaker_name(step: str, key: str) -> str:
    return step if key in ("", step) else f"{step}[{key}]"


def edge_target(edge: EdgeFill) -> str:
    return edge.edge.rpartition("->")[2]


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def queue_bar(edge: EdgeFill, width: int = BAR_WIDTH) -> str:
    """``█████░░░ 3/4``: the bar is full only when the queue is (backpressure); a queue with
    anything in it shows at least one block."""
    queued, capacity = max(edge.queued, 0), max(edge.capacity, 0)
    if capacity == 0 or queued >= capacity:
        filled = width if queued > 0 or capacity > 0 else 0
    else:
        filled = min(width - 1, max(1 if queued else 0, round(width * queued / capacity)))
    return f"{'█' * filled}{'░' * (width - filled)} {edge.queued}/{edge.capacity}"


def limited(names: list[str], most: int = MAX_BREAKERS) -> list[str]:
    if len(names) <= most:
        return names
    return [*names[:most], f"{len(names) - most} more"]


class _Display:
    """Calls ``handle`` for each event; an exception is logged once and then ignored, so a
    broken display never stops a run."""

    _failed = False

    def __call__(self, event: Event) -> None:
        try:
            self.handle(event)
        except Exception:
            if not self._failed:
                self._failed = True
                logger.warning("progress display: cannot show %s", type(event).__name__,
                               exc_info=True)

    def handle(self, event: Event) -> None:
        raise NotImplementedError


class LineProgress(_Display):
    """Prints ``headrace: ...`` to stderr at most every ``interval`` seconds."""

    def __init__(self, stream: IO[str], interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.counters = Counters()
        self._last = 0.0

    def handle(self, event: Event) -> None:
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
        parts = [f"headrace: {c.read:,} records read{done}", f"{c.written:,} written",
                 f"{c.dead:,} dead", f"{human(c.read / elapsed)} records/s"]
        retries = c.total_retries
        if retries:
            parts.append(f"{retries:,} {'retry' if retries == 1 else 'retries'}")
        parts.extend(f"breaker {b}" for b in limited(c.open_breakers()))
        edge = c.fullest_edge()
        if edge is not None:
            parts.append(f"queue {edge_target(edge)} {edge.queued}/{edge.capacity}")
        return ", ".join(parts)


class RecentRates:
    """Records per second over roughly the last ``window`` seconds, from cumulative counts."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def update(self, now: float, totals: dict[str, int]) -> dict[str, float]:
        self._samples.append((now, dict(totals)))
        # Keep one sample at least ``window`` old as the baseline, none older.
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        then, before = self._samples[0]
        span = now - then
        if span <= 0:
            return dict.fromkeys(totals, 0.0)
        return {name: max(count - before.get(name, 0), 0) / span
                for name, count in totals.items()}


class RichProgress(_Display):
    """A live progress bar and, under it, one row per step and one for the sink: records out,
    records/s over the last few seconds, calls in flight, retries, and how full the queue in
    front of it is; then open breakers, rate-limit waits and the last checkpoint. The rows are
    rebuilt on the event thread at most every ``refresh`` seconds; rich's refresh thread only
    renders the latest finished table."""

    def __init__(self, console: Any, clock: Callable[[], float] = time.monotonic,
                 refresh: float = 0.25) -> None:
        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        self.counters = Counters()
        self.clock = clock
        self.refresh = refresh
        self.rates = RecentRates()
        self.view: RenderableType = Text("")
        self.progress = _progress_with(
            lambda: self.view,
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
            get_time=clock,
        )
        self.task: Any = None
        self.steps: tuple[str, ...] = ()
        self._built = float("-inf")

    def handle(self, event: Event) -> None:
        c = self.counters
        if isinstance(event, RunStarted):
            c.total, c.started = event.total, self.clock()
            self.steps = event.step_ids
            self.rates.update(c.started, {})
            self.progress.start()
            self.task = self.progress.add_task(event.pipeline, total=event.total, stats="")
            return
        if isinstance(event, StopRequested):
            self.progress.console.print(f"[yellow]{event.reason}")
            return
        if isinstance(event, RunFinished):
            if self.task is None:
                return
            try:
                if event.summary.get("status") == "ok" and c.total:
                    self.progress.update(self.task, completed=c.total)
                self._rebuild(self.clock())
            finally:
                self.progress.stop()
            return
        c.apply(event)
        if self.task is None:
            return
        now = self.clock()
        if now - self._built >= self.refresh:
            self._rebuild(now)

    def _rebuild(self, now: float) -> None:
        c = self.counters
        self._built = now
        elapsed = max(now - c.started, 1e-9)
        parts = [f"{human(c.read)} in", f"{human(c.written)} out"]
        if c.dead:
            parts.append(f"[red]{c.dead:,} dead[/]")
        parts.append(f"{human(c.read / elapsed)}/s")
        self.progress.update(self.task, completed=c.progress, stats=" · ".join(parts))
        self.view = self._table(now)

    def _table(self, now: float) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        c = self.counters
        rates = self.rates.update(now, {**c.step_in, SINK: c.written})
        table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
        table.add_column("step")
        for name in ("out", "records/s", "in flight", "retries"):
            table.add_column(name, justify="right")
        table.add_column("queue in", no_wrap=True)
        for step in self.steps:
            retries = c.retries.get(step, 0)
            table.add_row(
                step, human(c.step_out.get(step, 0)), human(rates.get(step, 0.0)),
                str(c.in_flight.get(step, 0)),
                Text(f"{retries:,}", style="yellow" if retries else ""),
                self._bar(c.edge_into(step)),
            )
        table.add_row(SINK, human(c.written), human(rates.get(SINK, 0.0)), "", "",
                      self._bar(c.edge_into(SINK)))
        lines: list[RenderableType] = [table]
        breakers = c.open_breakers()
        if breakers:
            lines.append(Text("breakers: " + " · ".join(limited(breakers)), style="red"))
        if c.rate_waits:
            waits = " · ".join(
                f"{step} {n:,} {'wait' if n == 1 else 'waits'} "
                f"({c.rate_wait_seconds.get(step, 0.0):.1f}s)" for step, n in c.rate_waits.items()
            )
            lines.append(Text(f"rate limited: {waits}", style="yellow"))
        if c.checkpoint_records is not None:
            lines.append(Text(f"checkpoint: {c.checkpoint_records:,} records committed",
                              style="dim"))
        return Group(*lines)

    @staticmethod
    def _bar(edge: EdgeFill | None) -> Any:
        from rich.text import Text

        if edge is None:
            return ""
        if edge.capacity > 0 and edge.queued >= edge.capacity:
            style = "red"
        elif edge.capacity > 0 and 2 * edge.queued >= edge.capacity:
            style = "yellow"
        else:
            style = "green"
        return Text(queue_bar(edge), style=style)


def _progress_with(below: Callable[[], RenderableType], *columns: Any, **options: Any) -> Any:
    """A rich ``Progress`` that renders ``below()`` under its bar (rich imported lazily)."""
    from rich.progress import Progress

    class StepsProgress(Progress):
        def get_renderables(self) -> Iterable[RenderableType]:
            yield self.make_tasks_table(self.tasks)
            yield below()

    return StepsProgress(*columns, **options)
