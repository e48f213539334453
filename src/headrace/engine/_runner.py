"""Run a plan: source -> steps -> sink over bounded channels, inside one task group.

A stop request (first SIGINT/SIGTERM) makes the source stop reading; what is in flight
drains through the steps into the sink, which then publishes its output. A second signal, or
a drain that outlives ``drain_timeout``, cancels everything and discards the partial output.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from headrace.errors import HeadraceError, SinkError, SourceError
from headrace.plugin import Batch, DeadRecord, Position

from ._deadletter import DeadLetterWriter
from ._events import (
    BatchRead,
    BatchWritten,
    Event,
    EventBus,
    RunFinished,
    RunStarted,
    StopRequested,
)
from ._plan import Plan
from ._projection import apply_projection
from ._stage import StepStage
from ._stats import RunStats, StepStats

logger = logging.getLogger("headrace.engine")


@dataclass
class StopControl:
    """Shared between the signal watcher and the source: has a stop been asked for, and why."""

    reason: str | None = None
    requested: anyio.Event = field(default_factory=anyio.Event)

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.requested.set()


@dataclass
class RunResult:
    summary: dict[str, Any]
    error: HeadraceError | None
    interrupted_by: str | None

    @property
    def status(self) -> str:
        return str(self.summary["status"])


def dead_letter_path(plan: Plan) -> Path:
    config = plan.pipeline.config
    if config.dead_letter.path:
        return plan.sink.context.resolve_path(config.dead_letter.path)
    sink_path = getattr(plan.sink.options, "path", None)
    if sink_path and sink_path != "-":
        final = plan.sink.context.resolve_path(sink_path)
        return final.with_name(f"{final.stem}.dead.jsonl")
    return plan.pipeline.base_dir / f"{config.name}.dead.jsonl"


def _first_error(exc: BaseException) -> BaseException:
    """The most telling exception in a (nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        inner = [_first_error(e) for e in exc.exceptions]
        for candidate in inner:
            if isinstance(candidate, HeadraceError):
                return candidate
        for candidate in inner:
            if not isinstance(candidate, anyio.get_cancelled_exc_class()):
                return candidate
        return inner[0]
    return exc


class Runner:
    def __init__(self, plan: Plan, observers: list[Callable[[Event], None]] | None = None) -> None:
        self.plan = plan
        self.bus = EventBus(observers)
        self.stats = RunStats(steps=[StepStats(id=p.id) for p in plan.steps])
        self.stop = StopControl()
        self.dead_letters = DeadLetterWriter(dead_letter_path(plan), plan.name)
        self._source_id = plan.source.context.plugin_id
        for planned in plan.steps:
            planned.policy.emit = self.bus.emit

    async def _write_dead(
        self, step: str, position: Position | None, dead: list[DeadRecord]
    ) -> None:
        await anyio.to_thread.run_sync(self.dead_letters.write, step, position, dead)

    async def _run_source(self, outbox: ObjectSendStream[Batch]) -> None:
        source = self.plan.source
        async with outbox:
            iterator = source.batches()
            try:
                async for batch in iterator:
                    rejects = batch.rejects
                    self.stats.records_in += batch.num_rows + len(rejects)
                    if rejects:
                        self.stats.source_dead += len(rejects)
                        await self._write_dead(self._source_id, batch.position, rejects)
                        batch.rejects = []
                    self.bus.emit(BatchRead(batch.num_rows, len(rejects), source.progress()))
                    await outbox.send(batch)
                    if self.stop.requested.is_set():
                        break
            except HeadraceError:
                raise
            except (OSError, pa.ArrowException) as exc:
                raise SourceError(f"source '{self._source_id}': {exc}") from exc
            finally:
                with anyio.CancelScope(shield=True):
                    await iterator.aclose()  # type: ignore[attr-defined]

    async def _run_sink(self, inbox: ObjectReceiveStream[Batch]) -> None:
        async with inbox:
            async for batch in inbox:
                try:
                    await self.plan.sink.write(batch)
                except HeadraceError:
                    raise
                except (OSError, pa.ArrowException) as exc:
                    reason = getattr(exc, "strerror", None) or exc
                    raise SinkError(f"sink '{self.plan.sink.describe()}': {reason}") from exc
                self.stats.records_out += batch.num_rows
                self.bus.emit(BatchWritten(batch.num_rows))

    async def _flow(self) -> None:
        """Open the sink, then the source; wire channels; run every stage in one task group."""
        size = self.plan.pipeline.config.runtime.channel_size
        stages = [
            StepStage(p, s, self.bus, self._write_dead)
            for p, s in zip(self.plan.steps, self.stats.steps, strict=True)
        ]
        async with self.plan.sink, self.plan.source:
            send, receive = anyio.create_memory_object_stream[Batch](size)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run_source, send)
                for stage in stages:
                    next_send, next_receive = anyio.create_memory_object_stream[Batch](size)
                    tg.start_soon(stage.run, receive, next_send)
                    receive = next_receive
                tg.start_soon(self._run_sink, receive)
            with anyio.CancelScope(shield=True):
                await self.plan.sink.finish()

    async def _watch_signals(self, flow_scope: anyio.CancelScope) -> None:
        drain_timeout = self.plan.pipeline.config.runtime.drain_timeout
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stop.reason is not None:
                    self.bus.emit(StopRequested(f"second {name}: stopping now"))
                    flow_scope.cancel()
                    return
                self.stop.request(name)
                self.bus.emit(StopRequested(f"{name}: draining (Ctrl-C again to stop at once)"))
                flow_scope.deadline = anyio.current_time() + drain_timeout

    async def run(self, handle_signals: bool = True) -> RunResult:
        source = self.plan.source
        self.bus.emit(
            RunStarted(self.plan.name, tuple(s.id for s in self.stats.steps),
                       source.total_size(), "bytes")
        )
        started = time.perf_counter()
        error: HeadraceError | None = None
        cancelled_by_signal = False
        try:
            async with anyio.create_task_group() as outer:
                flow_scope = anyio.CancelScope()
                if handle_signals:
                    outer.start_soon(self._watch_signals, flow_scope)
                with flow_scope:
                    await self._flow()
                cancelled_by_signal = flow_scope.cancel_called
                outer.cancel_scope.cancel()
        except BaseException as exc:
            first = _first_error(exc)
            with anyio.CancelScope(shield=True):
                await self.plan.sink.abort()
            if isinstance(first, HeadraceError):
                error = first
            elif isinstance(first, Exception):
                raise first from None
            else:
                raise
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.dead_letters.finish)
        if cancelled_by_signal:
            with anyio.CancelScope(shield=True):
                await self.plan.sink.abort()
        duration = time.perf_counter() - started
        config = self.plan.pipeline.config
        loop_module = type(asyncio.get_running_loop()).__module__
        extra: dict[str, Any] = {
            "pipeline": config.name,
            "loop": "uvloop" if loop_module.startswith("uvloop") else "asyncio",
        }
        if self.stop.reason is not None:
            status = "interrupted"
            extra["interrupted_by"] = self.stop.reason
            if cancelled_by_signal:
                extra["output_discarded"] = True
        elif error is not None:
            status = "failed"
        else:
            budget = config.runtime.failure_budget(self.stats.records_in)
            status = "failed" if self.stats.records_dead > budget else "ok"
            if status == "failed":
                extra["reason"] = (
                    f"{self.stats.records_dead} records dead-lettered "
                    f"(max_failures: {config.runtime.max_failures})"
                )
        if error is not None:
            extra["error"] = error.one_line()
        if self.dead_letters.count:
            extra["dead_letter"] = str(self.dead_letters.path)
        summary = self.stats.summary(status, duration, **extra)
        self.bus.emit(RunFinished(summary))
        return RunResult(summary=summary, error=error, interrupted_by=self.stop.reason)


def run_plan(
    plan: Plan,
    observers: list[Callable[[Event], None]] | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Run ``plan`` on a new event loop (uvloop when configured and installed)."""
    projected = apply_projection(plan)
    if projected is not None:
        logger.info("reading only the columns the pipeline uses: %s", ", ".join(projected))
    runner = Runner(plan, observers)
    loop = plan.pipeline.config.runtime.loop
    use_uvloop = False
    if loop in ("uvloop", "auto"):
        try:
            import uvloop  # noqa: F401
        except ImportError:
            if loop == "uvloop":
                from headrace.errors import ConfigValueError

                raise ConfigValueError(
                    "runtime.loop is uvloop but uvloop is not installed",
                    hint="pip install 'headrace[uvloop]' or set runtime.loop: asyncio",
                ) from None
        else:
            use_uvloop = True
    return anyio.run(
        runner.run, handle_signals, backend="asyncio", backend_options={"use_uvloop": use_uvloop}
    )
