"""Run a plan: source -> steps -> sink over bounded channels, inside one task group.

A stop request (first SIGINT/SIGTERM) makes the source stop reading; what is in flight
drains through the steps into the sink, which then publishes its output. A second signal, or
a drain that outlives ``drain_timeout``, cancels everything and discards the partial output.
"""

from __future__ import annotations

import asyncio
import gc
import json
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
from anyio.streams.memory import MemoryObjectSendStream

from headrace.errors import HeadraceError, SinkError, SourceError
from headrace.plugin import DeadRecord, Position

from ._budget import MemoryBudget
from ._deadletter import DeadLetterWriter
from ._events import (
    BatchRead,
    BatchWritten,
    CheckpointCommitted,
    EdgeFill,
    Event,
    EventBus,
    RunFinished,
    RunStarted,
    Sampled,
    StopRequested,
)
from ._ledger import Checkpoint, Ledger, default_run_dir, pipeline_hash
from ._lifecycle import resumable
from ._parcel import END, Item, Letter, Parcel, Span
from ._plan import Plan
from ._projection import apply_projection
from ._resilience import StepPolicy
from ._stage import StepStage
from ._stats import RunStats, StepStats
from ._watchdog import LoopWatchdog, Stall

logger = logging.getLogger("headrace.engine")
SAMPLE_INTERVAL = 0.5  # seconds between gauge snapshots (channel fill, calls in flight)


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
    interrupted_by: str | None  # SIGINT/SIGTERM; a max_failures stop is a failure instead

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
    def __init__(self, plan: Plan, observers: list[Callable[[Event], None]] | None = None,
                 resume: bool = False) -> None:
        self.plan = plan
        self.bus = EventBus(observers)
        self.stats = RunStats(steps=[StepStats(id=p.id) for p in plan.steps])
        self.stop = StopControl()
        budget = plan.pipeline.config.runtime.memory_budget
        self.budget = MemoryBudget(int(budget)) if budget else None
        plan.services.bind(stopping=lambda: self.stop.reason is not None)
        config = plan.pipeline.config
        # What decides the output: not ``runtime`` (drain timeout, channel sizes, policies'
        # defaults), which a resumed run may change.
        self.pipeline_hash = pipeline_hash(
            config.model_dump_json(exclude={"runtime", "description"})
        )
        self.dead_letters = DeadLetterWriter(dead_letter_path(plan), plan.name, self.pipeline_hash)
        self._source_id = plan.source.context.plugin_id
        for planned in plan.steps:
            planned.policy.emit = self.bus.emit
        # Sources and sinks that call out (HTTP) retry too: their events reach the observers.
        self._endpoint_policies = {
            kind: plugin.context.policy for kind, plugin in (("source", plan.source),
                                                             ("sink", plan.sink))
            if isinstance(plugin.context.policy, StepPolicy)
        }
        for policy in self._endpoint_policies.values():
            policy.emit = self.bus.emit
        self.resume = resume
        threshold = config.runtime.loop_block_warning
        self._watchdog = LoopWatchdog(threshold) if threshold else None
        fingerprint = plan.source.fingerprint()  # a stat() of the input: once
        self.fingerprint = fingerprint if plan.source.resumable else None
        self.checkpointing = (config.runtime.checkpoint and self.fingerprint is not None
                              and plan.sink.resumable)
        plan.sink.checkpointing = self.checkpointing
        plan.sink.input_identity = (json.dumps(fingerprint, sort_keys=True)
                                    if fingerprint is not None else "")
        self.ledger = Ledger(default_run_dir(plan.pipeline.base_dir, config.name,
                                             config.runtime.run_dir))
        self._resumed_records = 0  # committed by the runs this one continues
        self._resumed_dead = 0  # and dead-lettered by them: max_failures counts the whole run
        self._resumed_out = 0  # and the sink holds from them
        self._last_position: Position | None = None  # of the last aligned parcel written
        self._sink_aligned = True  # the sink's output ends at an input boundary
        self._read_position: Position | None = None  # of the last batch the source read
        self.source_exhausted = False  # the source ended by itself (not stopped)
        self.input_complete = False  # ... and everything it read reached the sink
        self._restore_failed = False  # putting a resumed run's sink or source back failed
        self._committed_records = 0
        self._last_checkpoint = 0.0
        self._gauges: list[tuple[str, MemoryObjectSendStream[Item]]] = []
        self._stages: list[StepStage] = []
        self.stopped_for_failures = False
        self.published = False
        self._publishing = False  # the output is being published (or was, by a killed run)

    async def _write_dead(
        self, step: str, position: Position | None, dead: list[DeadRecord]
    ) -> None:
        await anyio.to_thread.run_sync(self.dead_letters.write, step, position, dead)

    @property
    def _flushes_on_stop(self) -> bool:
        """Whether a stopped run publishes what it drained (then regrouping steps flush what
        they hold): a max_failures stop, or a run without checkpoints to resume from."""
        return self.stopped_for_failures or not self.checkpointing

    def _over_budget(self) -> bool:
        """Dead letters past ``max_failures``, over this run and the runs it continues."""
        records = self._resumed_records + self.stats.records_in
        dead = self._resumed_dead + self.stats.records_dead
        return dead > self.plan.pipeline.config.runtime.failure_budget(records)

    def _check_failure_budget(self) -> None:
        """Stop reading once dead letters pass ``max_failures`` (a share: after 1,000 in)."""
        runtime = self.plan.pipeline.config.runtime
        if self.stop.reason is not None:
            return
        if isinstance(runtime.max_failures, str) and self.stats.records_in < 1000:
            return
        if self._over_budget():
            self.stopped_for_failures = True
            self.stop.request("max_failures")
            self.bus.emit(StopRequested(
                f"more than max_failures ({runtime.max_failures}) records dead-lettered: "
                "stopping"))

    async def _run_source(self, outbox: ObjectSendStream[Item]) -> None:
        source = self.plan.source
        async with outbox:
            iterator = source.batches()
            try:
                async for batch in iterator:
                    rejects, batch.rejects = batch.rejects, []
                    span = Span(position=batch.position,
                                source_records=batch.num_rows + len(rejects),
                                records_before=self._resumed_records + self.stats.records_in,
                                enter_at=batch.enter_at)
                    batch.records_before = span.records_before
                    self.stats.records_in += span.source_records
                    if self.budget is not None:
                        await self.budget.acquire(batch, span)
                    if rejects:
                        self.stats.source_dead += len(rejects)
                        span.letters = [Letter(self._source_id, batch.position, r)
                                        for r in rejects]
                    self.bus.emit(BatchRead(batch.num_rows, len(rejects), source.progress()))
                    self._read_position = batch.position or self._read_position
                    await outbox.send(Parcel(batch, span))
                    if self.stop.requested.is_set():
                        break
                else:  # a source may end early on a stop (stdin does): that is no end
                    self.source_exhausted = not self.stop.requested.is_set()
                if self.source_exhausted or self._flushes_on_stop:
                    await outbox.send(END)
            except HeadraceError:
                raise
            except (OSError, pa.ArrowException) as exc:
                raise SourceError(f"source '{self._source_id}': {exc}") from exc
            except Exception as exc:
                with source.failures("read"):
                    raise exc from None
            finally:
                with anyio.CancelScope(shield=True):
                    await iterator.aclose()  # type: ignore[attr-defined]

    async def _run_sink(self, inbox: ObjectReceiveStream[Item]) -> None:
        interval = self.plan.pipeline.config.runtime.checkpoint_interval
        async with inbox:
            async for item in inbox:
                if item is END:
                    # Every stage has flushed: the output holds everything the source read,
                    # whatever the last parcel was (rows a step made in flush, say).
                    self._sink_aligned = True
                    self._last_position = self._read_position or self._last_position
                    continue
                assert isinstance(item, Parcel)
                batch, span = item.batch, item.span
                if span.letters:  # in source order, just before the batch's records
                    await self._write_letters(span.letters)
                started = time.perf_counter()
                try:
                    # A parcel of nothing but a span or dead letters: no columns, nothing to
                    # tell the sink (an empty columnar batch still tells an empty output's
                    # schema).
                    refused = (await self.plan.sink.write(batch)
                               if batch.num_rows or batch.is_columnar else None)
                except HeadraceError:
                    raise
                except (OSError, pa.ArrowException) as exc:
                    reason = getattr(exc, "strerror", None) or exc
                    raise SinkError(f"sink '{self.plan.sink.describe()}': {reason}") from exc
                except Exception as exc:
                    with self.plan.sink.failures("write"):
                        raise exc from None
                if refused:
                    self.stats.sink_dead += len(refused)
                    sink_id = self.plan.sink.context.plugin_id
                    await self._write_letters([Letter(sink_id, batch.position, r)
                                               for r in refused])
                self.stats.records_out += batch.num_rows - len(refused or ())
                self._committed_records += span.source_records
                if self.budget is not None:
                    await self.budget.release(span)
                # Rows a regrouping step emitted ahead of the input they close, and dead
                # letters sent on ahead, end at no input boundary: no checkpoint after them
                # until a parcel carrying a position closes the group.
                self._sink_aligned = item.aligned
                if item.aligned:
                    self._last_position = span.position
                self.bus.emit(BatchWritten(batch.num_rows, time.perf_counter() - started))
                self._check_failure_budget()
                if (self.checkpointing and item.aligned
                        and time.monotonic() - self._last_checkpoint >= interval):
                    await self._checkpoint()

    async def _write_letters(self, letters: list[Letter]) -> None:
        """In line order, whatever step each failed in: the file is then the same whichever
        way the input was cut into batches (an interrupted and resumed run included)."""
        ordered = sorted(letters, key=lambda letter: -1 if letter.record.row_id is None
                         else letter.record.row_id)
        start = 0
        while start < len(ordered):
            first = ordered[start]
            stop = start + 1
            while (stop < len(ordered) and ordered[stop].step == first.step
                   and ordered[stop].position == first.position):
                stop += 1
            await self._write_dead(first.step, first.position,
                                   [letter.record for letter in ordered[start:stop]])
            start = stop

    async def _checkpoint(self) -> None:
        """Sink and dead letters durable first, then the ledger: it never runs ahead."""
        self._last_checkpoint = time.monotonic()
        if self._last_position is None:
            return
        dead_state = await anyio.to_thread.run_sync(self.dead_letters.checkpoint)
        records = self._resumed_records + self._committed_records
        out = self._resumed_out + self.stats.records_out
        token = self.plan.source.resume_token(self._last_position)
        with self.plan.sink.failures("checkpoint"):
            sink_state = await self.plan.sink.commit(
                {"source": token, "dead_letters": dead_state, "records": records, "out": out})
        checkpoint = Checkpoint(source=token, sink=sink_state, dead_letters=dead_state,
                                records=records, out=out)
        await anyio.to_thread.run_sync(self.ledger.commit, checkpoint)
        self.bus.emit(CheckpointCommitted(self._last_position.end, records))

    def _loop_blocked(self, stall: Stall) -> None:
        logger.warning("the event loop was blocked for %.2f s at %s: blocking work belongs "
                       "in a thread (executor: thread) or an async API", stall.seconds,
                       stall.where)

    async def _sample(self) -> None:
        """Gauges for observers: batches waiting per edge, calls in flight per step."""
        while True:
            edges = tuple(
                EdgeFill(name, stream.statistics().current_buffer_used,
                         int(stream.statistics().max_buffer_size))
                for name, stream in self._gauges
            )
            in_flight = tuple((stage.stats.id, stage.in_flight) for stage in self._stages)
            self.bus.emit(Sampled(edges, in_flight, self.plan.services.metric_totals()))
            await anyio.sleep(SAMPLE_INTERVAL)

    async def _begin(self) -> None:
        """Open the ledger; on resume, put the sink, dead letters and source back."""
        if not self.checkpointing:
            if self.resume:
                from headrace.errors import ConfigError

                why = ("runtime.checkpoint is off" if not self.plan.pipeline.config.runtime
                       .checkpoint else "this source or sink cannot resume (stdin/stdout?)")
                raise ConfigError(f"cannot resume: {why}")
            return
        await anyio.to_thread.run_sync(self.ledger.open)
        self.plan.services.state_root = self.ledger.run_dir / "state"
        previous = await anyio.to_thread.run_sync(self.ledger.previous)
        checkpoint = await anyio.to_thread.run_sync(
            self.ledger.begin, self.pipeline_hash, self.fingerprint, self.resume
        )
        try:
            await self._restore(checkpoint, previous)
        except BaseException:
            self._restore_failed = True  # a later --resume would fail the same way
            raise

    async def _restore(self, checkpoint: Checkpoint | None, previous: str | None) -> None:
        if self.resume:
            checkpoint = await self._newer_stored_checkpoint(checkpoint)
        # Killed while publishing: its final checkpoint covers everything it read, and its
        # output may already be (partly) under the final names. Finish that; read no more.
        self._publishing = (self.resume and previous == "publishing"
                           and checkpoint is not None)
        state = checkpoint or Checkpoint({}, {}, {}, 0)
        with self.plan.sink.failures("resume"):
            await self.plan.sink.resume({**state.sink, "publishing": True} if self._publishing
                                        else state.sink)
        await anyio.to_thread.run_sync(self.dead_letters.resume, state.dead_letters,
                                       self._publishing)
        if checkpoint is not None:
            self._resumed_records = checkpoint.records
            self._resumed_dead = int(checkpoint.dead_letters.get("count", 0))
            self._resumed_out = checkpoint.out
            with self.plan.source.failures("resume"):
                await self.plan.source.resume(checkpoint.source)
            logger.info("resuming after record %d", checkpoint.records)

    async def _newer_stored_checkpoint(self, checkpoint: Checkpoint | None
                                       ) -> Checkpoint | None:
        """A transactional sink may have committed a checkpoint the ledger missed (killed
        between the two commits): the sink's own record is then the truth."""
        with self.plan.sink.failures("stored_checkpoint"):
            stored = await self.plan.sink.stored_checkpoint()
        if stored is None or (checkpoint is not None
                              and int(stored["records"]) <= checkpoint.records):
            return checkpoint
        logger.info("resuming from the sink's own checkpoint (%d records; the ledger had %s)",
                    stored["records"], checkpoint.records if checkpoint else 0)
        return Checkpoint(source=stored["source"], sink=stored.get("sink", {}),
                          dead_letters=stored["dead_letters"], records=int(stored["records"]),
                          out=int(stored.get("out", 0)))

    async def _flow(self) -> None:
        """Open the sink, then the source; wire channels; run every stage in one task group."""
        size = self.plan.pipeline.config.runtime.channel_size
        self._stages = stages = [
            StepStage(p, s, self.bus, index)
            for index, (p, s) in enumerate(zip(self.plan.steps, self.stats.steps, strict=True))
        ]
        async with self.plan.sink, self.plan.source:
            await self._begin()
            for stage in stages:
                stage.resume_records = self._resumed_records
                stage.budget = self.budget
            self._last_checkpoint = time.monotonic()
            names = [self._source_id, *(s.stats.id for s in stages), "sink"]
            send, receive = anyio.create_memory_object_stream[Item](size)
            self._gauges = [(f"{names[0]}->{names[1]}", send)]
            async with anyio.create_task_group() as tg:
                if not self._publishing:
                    tg.start_soon(self._run_source, send)
                for index, stage in enumerate(stages):
                    next_send, next_receive = anyio.create_memory_object_stream[Item](size)
                    self._gauges.append((f"{names[index + 1]}->{names[index + 2]}", next_send))
                    tg.start_soon(stage.run, receive, next_send)
                    receive = next_receive
                tg.start_soon(self._run_sink, receive)
                if self._publishing:
                    await send.aclose()  # nothing to read: the channels close at once
            # The whole input reached the sink (a signal that came after the source ended
            # interrupts nothing), or a run killed while publishing is being finished.
            self.input_complete = self.source_exhausted or self._publishing
            with anyio.CancelScope(shield=True):
                if self.checkpointing and self._sink_aligned:
                    await self._checkpoint()  # drained: everything released is committed
                # An interrupted resumable run keeps its partial output for --resume; else
                # what was drained is published (a max_failures stop included: its dead
                # letters are what the user needs to see).
                if (self.input_complete or self.stop.reason is None
                        or self._flushes_on_stop):
                    if self.checkpointing:  # from here a crash leaves a partial publication
                        await anyio.to_thread.run_sync(self.ledger.mark_publishing)
                        self._publishing = True
                    with self.plan.sink.failures("finish"):
                        await self.plan.sink.finish()
                    self.published = True
                else:
                    with self.plan.sink.failures("abort"):
                        await self.plan.sink.abort()  # closes; the checkpointed part stays

    async def _watch_signals(self, flow_scope: anyio.CancelScope) -> None:
        drain_timeout = self.plan.pipeline.config.runtime.drain_timeout
        signalled = False  # the first signal drains (also during a max_failures stop)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signalled:
                    self.bus.emit(StopRequested(f"second {name}: stopping now"))
                    flow_scope.cancel()
                    return
                signalled = True
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
                outer.start_soon(self._sample)
                if self._watchdog is not None:
                    outer.start_soon(self._watchdog.run, self._loop_blocked)
                with flow_scope:
                    await self._flow()
                cancelled_by_signal = flow_scope.cancel_called
                outer.cancel_scope.cancel()
        except BaseException as exc:
            first = _first_error(exc)
            with anyio.CancelScope(shield=True):
                await self._abort_after(first)
            if isinstance(first, HeadraceError):
                error = first
            elif isinstance(first, Exception):
                raise first from None
            else:
                raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_outputs(error, cancelled_by_signal)
                await self.plan.services.aclose()  # every plugin has closed by now
        if cancelled_by_signal:
            with anyio.CancelScope(shield=True):
                await self._abort_after(None)
        return self._result(error, cancelled_by_signal, time.perf_counter() - started)

    async def _abort_after(self, original: BaseException | None) -> None:
        """Discard the sink's partial output after a failure; an error here is reported,
        never raised over the failure that led here."""
        sink = self.plan.sink
        if self.checkpointing and self.ledger.state is None:
            # Refused before it began (a refused --resume, another run holding the lock):
            # the partial output there is an earlier or other run's, kept for its resume.
            return
        try:
            with sink.failures("abort"):
                await sink.abort()
        except Exception as exc:
            message = exc.message if isinstance(exc, HeadraceError) else repr(exc)
            self.plan.services.teardown_errors.append(message)
            logger.error("%s (while handling %s)", message, original)

    async def _close_outputs(self, error: HeadraceError | None, cancelled: bool) -> None:
        """Dead letters: published with the output, or kept for ``--resume`` when a
        resumable run stopped early. The ledger records how the run ended, and unlocks."""
        if self.published or not self.checkpointing:
            await anyio.to_thread.run_sync(self.dead_letters.finish)
        else:
            await anyio.to_thread.run_sync(self.dead_letters.close)
        if self.ledger.opened:
            if self.published:
                event = "stop" if self.stopped_for_failures else "complete"
            else:  # a run that was publishing stays so: --resume finishes it
                event = "fail" if error is not None else "interrupt"
            await anyio.to_thread.run_sync(self.ledger.end, event)
            await anyio.to_thread.run_sync(self.ledger.close)

    @property
    def ledger_resumable(self) -> bool:
        """Whether ``--resume`` would continue this run (what the summary suggests)."""
        return (self.checkpointing and not self.published and not self._restore_failed
                and resumable(self.ledger.state))

    def _result(self, error: HeadraceError | None, cancelled: bool, duration: float
                ) -> RunResult:
        config = self.plan.pipeline.config
        loop_module = type(asyncio.get_running_loop()).__module__
        extra: dict[str, Any] = {
            "pipeline": config.name,
            "loop": "uvloop" if loop_module.startswith("uvloop") else "asyncio",
        }
        over_budget = self.stopped_for_failures or self._over_budget()
        if error is not None:
            status = "failed"
        elif self._interrupted:
            status = "interrupted"
            extra["interrupted_by"] = self.stop.reason
            if cancelled:
                extra["output_discarded"] = not self.checkpointing
        else:
            status = "failed" if over_budget else "ok"
        if status == "failed" and over_budget and error is None:
            extra["reason"] = (f"{self._resumed_dead + self.stats.records_dead} records "
                               "dead-lettered "
                               f"(max_failures: {config.runtime.max_failures})")
        if error is not None:
            extra["error"] = error.one_line()
        if self.dead_letters.count:
            extra["dead_letter"] = str(self.dead_letters.path)
        endpoint_retries = {k: p.retries for k, p in self._endpoint_policies.items() if p.retries}
        if endpoint_retries:
            extra["retries"] = endpoint_retries
        if self._watchdog is not None and self._watchdog.stalls:
            stalls = self._watchdog.stalls
            extra["loop_stalls"] = {"count": len(stalls),
                                    "longest_s": max(s.seconds for s in stalls),
                                    "where": sorted({s.where for s in stalls})}
        plugin_metrics: dict[str, dict[str, float]] = {}
        for plugin, name, total in self.plan.services.metric_totals():
            plugin_metrics.setdefault(plugin, {})[name] = total
        if plugin_metrics:
            extra["plugin_metrics"] = plugin_metrics
        if self.budget is not None:
            extra["memory_budget"] = {"limit": self.budget.limit, "peak": self.budget.peak,
                                      "waits": self.budget.waits}
        if self.plan.services.teardown_errors:
            extra["teardown_errors"] = list(self.plan.services.teardown_errors)
        if self.resume and self._resumed_records:
            extra["run_totals"] = self._run_totals()
        if self.checkpointing:
            extra["checkpoint"] = {
                "records": self._resumed_records + self._committed_records,
                "resumed_after": self._resumed_records if self.resume else None,
                "resumable": self.ledger_resumable,
                "run_dir": str(self.ledger.run_dir),
            }
        if status == "interrupted":
            unfinished = (self.stats.records_in - self.stats.records_out
                          - self.stats.records_filtered - self.stats.records_dead)
            if unfinished > 0:  # held by a regrouping step: a resumed run reads them again
                extra["records_unfinished"] = unfinished
        summary = self.stats.summary(status, duration, **extra)
        self.bus.emit(RunFinished(summary))
        interrupted = self.stop.reason if self._interrupted else None
        return RunResult(summary=summary, error=error, interrupted_by=interrupted)

    def _run_totals(self) -> dict[str, int]:
        """Counts over the whole run: what the runs this one continues committed, plus this
        run's own (the summary's top-level counts are this run's only)."""
        # What the earlier runs committed was out, dead or filtered: the rest of it.
        filtered_before = self._resumed_records - self._resumed_out - self._resumed_dead
        return {"records_in": self._resumed_records + self.stats.records_in,
                "records_out": self._resumed_out + self.stats.records_out,
                "records_filtered": filtered_before + self.stats.records_filtered,
                "records_dead": self._resumed_dead + self.stats.records_dead}

    @property
    def _interrupted(self) -> bool:
        """Stopped by a signal before the run was done. A signal that came once the whole
        input had reached the sink (while publishing, say) interrupted nothing."""
        if self.stop.reason is None or self.stopped_for_failures:
            return False
        return not (self.published and self.input_complete)


GC_THRESHOLDS = (20_000, 20, 10)


def _tune_gc() -> None:
    """Fewer garbage-collector passes over a heap of imported modules and records in flight.

    Everything loaded so far (modules, the plan) is moved out of the collector's sight
    (``gc.freeze``), and young objects are collected every 20,000 allocations instead of 700:
    a run allocates a few objects per record and frees nearly all of them by reference
    counting, and each pass costs time proportional to what it scans. Measured on the HTTP
    step against a local API: ~20% more requests/s (docs/benchmarks.md, benchmark 5).
    Cycles of young garbage are still collected, just in larger rounds.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_plan(
    plan: Plan,
    observers: list[Callable[[Event], None]] | None = None,
    handle_signals: bool = True,
    resume: bool = False,
) -> RunResult:
    """Run ``plan`` on a new event loop (uvloop when configured and installed)."""
    projected = apply_projection(plan)
    if projected is not None:
        logger.info("reading only the columns the pipeline uses: %s", ", ".join(projected))
    runner = Runner(plan, observers, resume=resume)
    _tune_gc()
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
