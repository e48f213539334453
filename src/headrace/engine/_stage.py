"""One step of the pipeline: reads batches from its inbox, processes up to ``concurrency`` at a
time on its executor, and sends results on in input order."""

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
from ._plan import PlannedStep
from ._process import ProcessRunner
from ._stats import StepStats


class _Slot:
    """A batch's place in the output order, filled when its processing ends."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Batch | BaseException | None = None


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

    async def _call(self, batch: Batch) -> StepOutput:
        executor = self.planned.executor
        if executor == "thread":
            # A timed-out call cannot stop a thread: it is abandoned to finish on its own.
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

    async def handle(self, batch: Batch) -> Batch:
        if batch.enter_at > self.index or batch.num_rows == 0:
            # Replayed records that failed further down, or nothing left to process (an
            # empty batch may carry its input's columns: a SQL step must not bind to them).
            return batch
        started = time.perf_counter()
        self.in_flight += 1
        try:
            isolate = process_isolating if self.step.splittable else process_whole
            output = await isolate(self._guarded_call if self.guarded else self._call, batch)
        except RetriesExhausted as exc:
            output = _all_dead(batch, exc)
        except HeadraceError:
            raise
        except Exception as exc:
            raise StepError(
                f"step '{self.stats.id}' failed: {type(exc).__name__}: {exc}",
                hint="run with --debug for the traceback",
            ) from exc
        finally:
            self.in_flight -= 1
            self.stats.retries = self.policy.retries
        seconds = time.perf_counter() - started
        dead = output.dead
        filtered = output.filtered
        policy = self.planned.spec.on_error
        if dead and policy == "fail":
            first = dead[0]
            raise StepError(
                f"step '{self.stats.id}' failed on the record at line/row {first.row_id}: "
                f"{first.error}: {first.message}",
                hint="on_error: dead_letter keeps the run going",
            )
        if dead and policy == "skip":
            filtered, dead = filtered + len(dead), []
        result = output.batch
        if result is not batch:  # dead letters and the source count travel with the batch
            result.dead = batch.dead
            result.source_records = batch.source_records
            result.records_before = batch.records_before
            result.charge = batch.charge
            if result.position is None:  # one output per input: the same place in the source
                result.position = batch.position
        if dead:
            result.dead = [*result.dead, *((self.stats.id, d) for d in dead)]
        stats = self.stats
        stats.records_in += batch.num_rows
        stats.records_out += output.batch.num_rows
        stats.filtered += filtered
        stats.dead += len(dead)
        stats.latencies.append(seconds)
        self.bus.emit(
            BatchProcessed(stats.id, batch.num_rows, result.num_rows, filtered,
                           len(dead), seconds)
        )
        return result

    async def run(
        self, inbox: ObjectReceiveStream[Batch], outbox: ObjectSendStream[Batch]
    ) -> None:
        if self.planned.executor == "process":
            self._process_runner = ProcessRunner(self.step, self.concurrency)
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
                    async for batch in inbox:
                        await outbox.send(await self.handle(batch))
                else:
                    await self._run_ordered(inbox, outbox)
        finally:
            if self._process_runner is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._process_runner.shutdown)

    async def _run_regrouping(
        self, inbox: ObjectReceiveStream[Batch], outbox: ObjectSendStream[Batch]
    ) -> None:
        """A step that holds records across batches, one batch at a time. What the input
        batches stand for (source position, record count, dead letters; not their records)
        waits in ``held`` until the step says its outputs have passed them (``released``);
        the last output then carries it, so a checkpoint never covers records the step
        still holds."""
        held: list[Batch] = []
        async for batch in inbox:
            if batch.enter_at > self.index:
                await outbox.send(batch)  # a replayed record entering further down
                continue
            if batch.num_rows == 0:  # nothing for the step; it still holds what it held
                output = StepOutput(batch=batch.slice(0, 0), released=not held)
            else:
                output = await self._regroup_call(batch)
            held.append(_place_of(batch))
            if self.budget is not None:  # its records now live in the step's own state
                await self.budget.release(batch)
            for out in self._release(output, held, batch):
                await outbox.send(out)
        final = await self.step.flush() or StepOutput(batch=Batch.from_rows([]))
        self._count(0, final)
        for out in self._release(final, held, None, release=True):
            await outbox.send(out)

    async def _regroup_call(self, batch: Batch) -> StepOutput:
        started = time.perf_counter()
        self.in_flight += 1
        try:
            output = await (self._guarded_call if self.guarded else self._call)(batch)
        except RetriesExhausted as exc:
            output = _all_dead(batch, exc)
        except HeadraceError:
            raise
        except Exception as exc:
            raise StepError(f"step '{self.stats.id}' failed: {type(exc).__name__}: {exc}",
                            hint="run with --debug for the traceback") from exc
        finally:
            self.in_flight -= 1
            self.stats.retries = self.policy.retries
        self.stats.latencies.append(time.perf_counter() - started)
        self._count(batch.num_rows, output)
        if output.dead and self.planned.spec.on_error == "skip":
            output.filtered, output.dead = output.filtered + len(output.dead), []
        if output.dead:
            self._check_on_error(output.dead)
            batch.dead = [*batch.dead, *((self.stats.id, d) for d in output.dead)]
        return output

    def _count(self, rows_in: int, output: StepOutput) -> None:
        rows_out = sum(b.num_rows for b in (output.batch, *output.more))
        stats = self.stats
        stats.records_in += rows_in
        stats.records_out += rows_out
        stats.filtered += output.filtered
        stats.dead += len(output.dead)
        self.bus.emit(BatchProcessed(stats.id, rows_in, rows_out, output.filtered,
                                     len(output.dead), 0.0))

    def _release(self, output: StepOutput, held: list[Batch], current: Batch | None,
                 release: bool = False) -> list[Batch]:
        outs = [b for b in (output.batch, *output.more) if b.num_rows]
        for out in outs:  # none of them stands for a place in the source by itself
            out.position, out.source_records, out.dead = None, 0, []
        if not (release or output.released) or not held:
            return outs
        if not outs:
            outs = [(current or held[-1]).slice(0, 0)]
        last = outs[-1]
        last.position = held[-1].position
        last.source_records = sum(b.source_records for b in held)
        last.records_before = held[0].records_before
        last.dead = [d for b in held for d in b.dead]
        held.clear()
        return outs

    def _check_on_error(self, dead: list[DeadRecord]) -> None:
        if self.planned.spec.on_error == "fail":
            first = dead[0]
            raise StepError(
                f"step '{self.stats.id}' failed on the record at line/row {first.row_id}: "
                f"{first.error}: {first.message}",
                hint="on_error: dead_letter keeps the run going",
            )

    async def _run_ordered(
        self, inbox: ObjectReceiveStream[Batch], outbox: ObjectSendStream[Batch]
    ) -> None:
        # A slot is reserved before the next batch is taken from the inbox, so the slot
        # channel's buffer plus the one slot the collector awaits bound the batches held here
        # to exactly ``window``. A slot left empty (result None) marks the end of the input.
        slots_send, slots_recv = anyio.create_memory_object_stream[_Slot](self.window - 1)

        async def work(slot: _Slot, batch: Batch) -> None:
            try:
                slot.result = await self.handle(batch)
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
                        batch = await inbox.receive()
                    except anyio.EndOfStream:
                        slot.done.set()
                        break
                    tg.start_soon(work, slot, batch)


def _place_of(batch: Batch) -> Batch:
    """An empty batch standing for ``batch``'s place in the source: the batch's records may
    be large and the step keeps what it needs of them itself."""
    return Batch(_rows=[], position=batch.position, dead=batch.dead,
                 source_records=batch.source_records, records_before=batch.records_before)


def _all_dead(batch: Batch, exc: RetriesExhausted) -> StepOutput:
    """Every record of a batch whose call kept failing, as dead letters with the attempts."""
    error = type(exc.error).__name__
    dead = [
        DeadRecord(record, error, str(exc), batch.row_id(i),
                   attempts=exc.attempts, first_at=exc.first_at, last_at=exc.last_at)
        for i, record in enumerate(batch.to_rows())
    ]
    return StepOutput(batch=batch.slice(0, 0), dead=dead)
