"""Conformance checks of steps: lifecycle under cancellation, accounting, thread safety."""

from __future__ import annotations

import threading
from functools import partial

import anyio

from headrace.plugin import Batch, Step, StepOutput

from ._harness import (
    CheckFailed,
    CheckSkipped,
    Trial,
    canonical,
    sample_batches,
    settle,
    tasks,
)

WORKERS = 4  # threads calling a thread-safe step at once


def _step(trial: Trial) -> Step:
    step = trial.new()
    assert isinstance(step, Step)
    return step


def _inputs(trial: Trial, step: Step) -> list[Batch]:
    if not trial.subject.records:
        raise CheckSkipped("no records to process: pass records=")
    batches = sample_batches(trial.subject.records)
    if step.batch_format == "rows":
        return [Batch.from_rows(b.to_rows(), row_ids=b.row_ids, position=b.position)
                for b in batches]
    return batches


async def _process(trial: Trial, step: Step, batch: Batch, number: int) -> StepOutput:
    doing = f"processing batch {number}"
    if step.is_async:
        output = await trial.call(doing, step.process_async, batch)
    elif "thread" in step.supported_executors:
        output = await trial.call(doing, partial(anyio.to_thread.run_sync, step.process, batch))
    else:

        async def inline() -> StepOutput:
            return step.process(batch)

        output = await trial.call(doing, inline)
    if not isinstance(output, StepOutput):
        raise CheckFailed(f"{doing} returned a {type(output).__name__}, not a StepOutput")
    return output


def _account(number: int, batch: Batch, output: StepOutput) -> None:
    kept = output.batch.num_rows
    if kept + output.filtered + len(output.dead) != batch.num_rows:
        raise CheckFailed(f"batch {number}: {batch.num_rows} records in, but {kept} out + "
                          f"{output.filtered} filtered + {len(output.dead)} dead")
    ids = output.batch.row_ids
    if ids is not None and len(ids) != kept:
        raise CheckFailed(f"batch {number}: {len(ids)} row ids for {kept} records out")


async def lifecycle(trial: Trial) -> str:
    """Open, cancel while processing, close: no hang, nothing left running."""
    before, threads = tasks(), set(threading.enumerate())
    step = _step(trial)
    inputs = _inputs(trial, step)
    done_one = anyio.Event()

    async def work() -> None:
        try:
            number = 0
            while True:  # until cancelled, as a run with more input would
                batch = inputs[number % len(inputs)]
                await _process(trial, step, batch.slice(0, batch.num_rows), number + 1)
                number += 1
                done_one.set()
        finally:
            done_one.set()

    async with trial.opened(step), anyio.create_task_group() as group:
        group.start_soon(work)
        await done_one.wait()
        group.cancel_scope.cancel()
    leftover = await settle(before, threads)
    if leftover:
        raise CheckFailed(leftover)
    return "cancelled while processing; closed; nothing left running"


async def accounting(trial: Trial) -> str:
    """Every record in comes out kept, filtered or dead; row ids match the records kept.
    A regrouping step is counted over the whole input, its ``flush`` included."""
    step = _step(trial)
    totals = [0, 0, 0, 0]

    def add(rows_in: int, output: StepOutput) -> None:
        out = sum(b.num_rows for b in (output.batch, *output.more))
        for i, value in enumerate((rows_in, out, output.filtered, len(output.dead))):
            totals[i] += value

    async with trial.opened(step):
        if step.stateful:
            await trial.call("resume_state(0)", step.resume_state, 0)
        for number, batch in enumerate(_inputs(trial, step), 1):
            output = await _process(trial, step, batch, number)
            if not step.regroups:
                _account(number, batch, output)
            add(batch.num_rows, output)
        if step.regroups:
            final = await trial.call("flush()", step.flush)
            if final is not None:
                add(0, final)
            if totals[1] + totals[2] + totals[3] != totals[0]:
                raise CheckFailed(f"{totals[0]} records in, but {totals[1]} out (flush "
                                  f"included) + {totals[2]} filtered + {totals[3]} dead")
    return (f"{totals[0]} records in: {totals[1]} out, {totals[2]} filtered, "
            f"{totals[3]} dead")


async def thread_safe(trial: Trial) -> str:
    """A step declaring ``thread_safe`` gives the same results called from several threads."""
    if not trial.subject.cls.thread_safe:
        raise CheckSkipped("declares thread_safe = False")
    if getattr(trial.subject.cls, "regroups", False) or getattr(trial.subject.cls, "stateful",
                                                                 False):
        raise CheckSkipped("keeps state across batches: the engine calls it one batch at a "
                           "time")
    step = _step(trial)
    if step.is_async or "thread" not in step.supported_executors:
        raise CheckSkipped("not run on the thread executor")
    inputs = _inputs(trial, step)
    limiter = anyio.CapacityLimiter(WORKERS)
    results: dict[tuple[int, int], list[str]] = {}

    async def run(copy: int, index: int) -> None:
        batch = inputs[index]
        fresh = batch.slice(0, batch.num_rows)  # each call its own batch object
        output = await trial.call(
            f"processing batch {index + 1} (copy {copy + 1}) from a thread",
            partial(anyio.to_thread.run_sync, step.process, fresh, limiter=limiter))
        results[(copy, index)] = [canonical(r) for r in output.batch.to_rows()]

    async with trial.opened(step):
        expected = []
        for index, batch in enumerate(inputs):
            output = await _process(trial, step, batch.slice(0, batch.num_rows), index + 1)
            expected.append([canonical(r) for r in output.batch.to_rows()])
        async with anyio.create_task_group() as group:
            for copy in range(WORKERS):
                for index in range(len(inputs)):
                    group.start_soon(run, copy, index)
    for (copy, index), rows in sorted(results.items()):
        if rows != expected[index]:
            raise CheckFailed(f"batch {index + 1} (copy {copy + 1}) processed from "
                              f"{WORKERS} threads at once gave other records than alone")
    return f"{len(results)} calls from {WORKERS} threads gave the same records"
