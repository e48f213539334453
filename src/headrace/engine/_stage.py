"""One step of the pipeline: reads parcels from its inbox, processes up to ``concurrency`` at
a time on its executor, and sends results on in input order.

Every call goes one way (``_attempt``): the step's policies, isolation of bad records where
the step may be split, ``on_error``, then counting. Per-batch steps move their input's span
to their output; regrouping steps hold the spans of the input they have taken in until the
step says its outputs have passed them, and flush only at the real end of the input.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from headrace.errors import HeadraceError, StepError
from headrace.plugin import (
    Batch,
    DeadRecord,
    RetriesExhausted,
    StepOutput,
    warm_arrow_conversions,
)

from ._budget import MemoryBudget
from ._events import BatchProcessed, EventBus
from ._isolate import process_isolating, process_whole
from ._parcel import END, Item, Letter, Parcel, Span
from ._plan import PlannedStep
from ._process import ProcessRunner
from ._resilience import wall_time
from ._stats import StepStats

#: Seconds the process pool's workers get to end after the run; then they are terminated.
PROCESS_SHUTDOWN_TIMEOUT = 5.0


class _Slot:
    """An item's place in the output order, filled when its processing ends."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Item | BaseException | None = None


class StepStage:
    def __init__(self, planned: PlannedStep, stats: StepStats, bus: EventBus,
                 index: int = 0) -> None:
        self.index = index
        self.planned = planned
        self.step = planned.step
        self.stats = stats
        self.bus = bus
        self.concurrency = planned.spec.concurrency
        self.policy = planned.policy
        # The engine wraps whole-batch calls in the step's policies, unless the step applies
        # them per record itself or none is set (then the wrapper is skipped: it costs time).
        self.guarded = self.policy.active and not self.step.applies_policy_per_record
        # While a batch waits for a retry it gives its call slot back, so more batches than
        # ``concurrency`` may be in the ordering window (but never more calls).
        self.window = self.concurrency * 2 if self.guarded else self.concurrency
        if self.step.stateful or self.step.regroups:
            self.window = 1  # in order, also while a batch waits for a retry
        self._slots = anyio.CapacityLimiter(self.concurrency)
        self._process_runner: ProcessRunner | None = None
        self._thread_limiter = anyio.CapacityLimiter(self.concurrency)
        self.in_flight = 0  # batches being processed now, for the gauges
        #: Source records a resumed run starts after (set by the runner before the run).
        self.resume_records = 0
        self.budget: MemoryBudget | None = None  # runtime.memory_budget, set by the runner
        #: Regrouping steps: the input taken in and not yet passed by an output.
        self._held: Span | None = None

    # -- one call ---------------------------------------------------------------------------

    async def _call(self, batch: Batch) -> StepOutput:
        executor = self.planned.executor
        if executor == "thread":
            # A timed-out call cannot stop a thread: it is abandoned to finish on its own.
            # (Never for steps that keep state: the plan refuses a timeout on those.)
            return await anyio.to_thread.run_sync(
                self.step.process, batch, limiter=self._thread_limiter,
                abandon_on_cancel=self.policy.policies.timeout is not None,
            )
        if executor == "process":
            assert self._process_runner is not None
            return await self._process_runner.process(batch)
        return await self.step.process_async(batch)

    async def _guarded_call(self, batch: Batch) -> StepOutput:
        return await self.policy.call(lambda: self._call(batch), slots=self._slots)

    async def _attempt(self, batch: Batch) -> StepOutput:
        """Process ``batch`` with the step's policies and ``on_error``, and count it. A call
        that runs out of retries makes exactly the batch's records dead letters."""
        started = time.perf_counter()
        self.in_flight += 1
        call = self._guarded_call if self.guarded else self._call
        try:
            if self.step.regroups:  # its batches are never split and run again
                output = await call(batch)
            else:
                isolate = process_isolating if self.step.splittable else process_whole
                output = await isolate(call, batch)
        except RetriesExhausted as exc:
            # A regrouping step still holding earlier input has released nothing by this.
            output = _all_dead(batch, exc, released=self._held is None)
        except HeadraceError:
            raise
        except Exception as exc:
            if self.policy.is_transient(exc) and not self.guarded:  # no retries to make
                now = wall_time()
                output = _all_dead(batch, RetriesExhausted(exc, 1, now, now),
                                   released=self._held is None)
            else:
                raise StepError(
                    f"step '{self.stats.id}' failed: {type(exc).__name__}: {exc}",
                    hint="run with --debug for the traceback",
                ) from exc
        finally:
            self.in_flight -= 1
            self.stats.retries = self.policy.retries
        seconds = time.perf_counter() - started
        if output.dead:
            output = self._on_error(output)
        self._count(batch.num_rows, output, seconds)
        return output

    def _on_error(self, output: StepOutput) -> StepOutput:
        policy = self.planned.spec.on_error
        if policy == "fail":
            first = output.dead[0]
            raise StepError(
                f"step '{self.stats.id}' failed on the record at line/row {first.row_id}: "
                f"{first.error}: {first.message}",
                hint="on_error: dead_letter keeps the run going",
            )
        if policy == "skip":
            output.filtered, output.dead = output.filtered + len(output.dead), []
        return output

    def _count(self, rows_in: int, output: StepOutput, seconds: float | None) -> None:
        rows_out = output.batch.num_rows + sum(b.num_rows for b in output.more)
        stats = self.stats
        stats.records_in += rows_in
        stats.records_out += rows_out
        stats.filtered += output.filtered
        stats.dead += len(output.dead)
        if seconds is not None:
            stats.latencies.add(seconds)
        self.bus.emit(BatchProcessed(stats.id, rows_in, rows_out, output.filtered,
                                     len(output.dead), seconds or 0.0))

    def _letters(self, batch: Batch, dead: list[DeadRecord]) -> list[Letter]:
        return [Letter(self.stats.id, batch.position, record) for record in dead]

    # -- per-batch steps ----------------------------------------------------------------------

    async def handle(self, parcel: Parcel) -> Parcel:
        batch = parcel.batch
        if parcel.span.enter_at > self.index or batch.num_rows == 0:
            # Replayed records that failed further down, or nothing left to process (an
            # empty batch may carry its input's columns: a SQL step must not bind to them).
            return parcel
        output = await self._attempt(batch)
        result = output.batch
        if result is not batch:  # the plugin-facing place in the source stays the input's
            result.position = result.position or batch.position
            result.records_before = batch.records_before
        if output.dead:
            parcel.span.letters.extend(self._letters(batch, output.dead))
        return Parcel(result, parcel.span)

    # -- the stage ----------------------------------------------------------------------------

    async def run(self, inbox: ObjectReceiveStream[Item], outbox: ObjectSendStream[Item]
                  ) -> None:
        if self.planned.executor == "process":
            self._process_runner = ProcessRunner(self.step, self.concurrency)
        grace = PROCESS_SHUTDOWN_TIMEOUT
        try:
            async with self.step, inbox, outbox:
                if self.step.stateful:
                    with self.step.failures("resume_state"):
                        await self.step.resume_state(self.resume_records)
                if self.planned.executor == "async" and self.step.batch_format == "rows":
                    # Arrow imports pandas on its first conversion of Python objects (~0.5 s):
                    # in a thread, not on the loop under the first batch of a rows step.
                    await anyio.to_thread.run_sync(warm_arrow_conversions)
                if self.step.regroups:
                    await self._run_regrouping(inbox, outbox)
                elif self.window == 1:
                    async for item in inbox:
                        await outbox.send(await self.handle(item)
                                          if isinstance(item, Parcel) else item)
                else:
                    await self._run_ordered(inbox, outbox)
        except BaseException:
            grace = 0.0  # cancelled or failed: nothing a busy worker does is wanted now
            raise
        finally:
            if self._process_runner is not None:
                # Shielded, but bounded: a worker stuck in a call is terminated.
                with anyio.CancelScope(shield=True):
                    await self._process_runner.shutdown(grace)

    async def _run_ordered(self, inbox: ObjectReceiveStream[Item],
                           outbox: ObjectSendStream[Item]) -> None:
        # A slot is reserved before the next item is taken from the inbox, so the slot
        # channel's buffer plus the one slot the collector awaits bound the batches held here
        # to exactly ``window``. A slot left empty (result None) marks the end of the inbox.
        slots_send, slots_recv = anyio.create_memory_object_stream[_Slot](self.window - 1)

        async def work(slot: _Slot, parcel: Parcel) -> None:
            try:
                slot.result = await self.handle(parcel)
            except BaseException as exc:  # handed to the collector, which re-raises in order
                slot.result = exc
                raise
            finally:
                slot.done.set()

        async def collect() -> None:
            async with slots_recv:
                async for slot in slots_recv:
                    await slot.done.wait()
                    result: Any = slot.result
                    if result is None or isinstance(result, BaseException):
                        return  # the end, or a failing worker's exception cancels the group
                    await outbox.send(result)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            async with slots_send:
                while True:
                    slot = _Slot()
                    await slots_send.send(slot)
                    try:
                        item = await inbox.receive()
                    except anyio.EndOfStream:
                        slot.done.set()
                        break
                    if item is END:
                        slot.result = END
                        slot.done.set()
                    else:
                        assert isinstance(item, Parcel)
                        tg.start_soon(work, slot, item)

    # -- regrouping steps ---------------------------------------------------------------------

    async def _run_regrouping(self, inbox: ObjectReceiveStream[Item],
                              outbox: ObjectSendStream[Item]) -> None:
        """One batch at a time. What the input batches stand for (position, record count)
        is held until the step says its outputs have passed them (``released``); the last
        output then carries it, so a checkpoint never covers records the step still holds.
        Dead letters go on at once: they need no checkpoint of their own, and a resumed run
        that reads their input again makes them again (the dead-letter file is cut back)."""
        async for item in inbox:
            if item is END:  # the real end of the input (a stop ends the inbox without it)
                with self.step.failures("flush"):
                    final = await self.step.flush()
                final = final or StepOutput(batch=Batch.from_rows([]))
                if final.dead:
                    final = self._on_error(final)
                self._count(0, final, None)
                letters = [Letter(self.stats.id, None, record) for record in final.dead]
                for parcel in self._release(final, letters, release=True):
                    await outbox.send(parcel)
                await outbox.send(END)
                return
            assert isinstance(item, Parcel)
            span, batch = item.span, item.batch
            if span.enter_at > self.index:
                await outbox.send(item)  # a replayed record entering further down
                continue
            if self.budget is not None:  # its records now live in the step's own state
                await self.budget.release(span)
            letters, span.letters = span.letters, []
            if batch.num_rows == 0:  # nothing for the step; it still holds what it held
                output = StepOutput(batch=batch.slice(0, 0), released=self._held is None)
            else:
                output = await self._attempt(batch)
                letters += self._letters(batch, output.dead)
            if self._held is None:
                self._held = span
            else:
                self._held.absorb(span)
            for parcel in self._release(output, letters, release=output.released):
                await outbox.send(parcel)
        # Stopped: no flush. What the step holds stays unreleased, so the last checkpoint
        # stays before it and a resumed run reads that input again.

    def _release(self, output: StepOutput, letters: list[Letter], release: bool
                 ) -> list[Parcel]:
        held = self._held
        first = held.records_before if held is not None else 0
        parcels = []
        for out in (output.batch, *output.more):
            if out.num_rows:
                out.records_before = first  # what a later stateful step forgets on resume
                parcels.append(Parcel(out, Span(records_before=first)))
        if letters:
            if not parcels:
                parcels.append(Parcel(_no_records(), Span(records_before=first)))
            parcels[0].span.letters = letters
        if release and held is not None:
            if not parcels:
                parcels.append(Parcel(_no_records(), Span()))
            last = parcels[-1]
            held.letters, held.charge = last.span.letters, 0
            last.span = held
            self._held = None
        return parcels


def _no_records() -> Batch:
    """An empty batch without columns, for a parcel that carries only a span or dead letters:
    the step's empty output may have its input's columns, which a sink must not take for the
    output's (an SQLite table created from them)."""
    return Batch.from_rows([])


def _all_dead(batch: Batch, exc: RetriesExhausted, released: bool = True) -> StepOutput:
    """Every record of a batch whose call kept failing, as dead letters with the attempts."""
    error = type(exc.error).__name__
    dead = [
        DeadRecord(record, error, str(exc), batch.row_id(i),
                   attempts=exc.attempts, first_at=exc.first_at, last_at=exc.last_at)
        for i, record in enumerate(batch.to_rows())
    ]
    return StepOutput(batch=batch.slice(0, 0), dead=dead, released=released)
