"""Steps written per record: ``RecordStep``, and the helpers that turn per-record outcomes
into an output batch and dead letters (also used by built-in steps that batch requests)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import anyio
import numpy as np
import pyarrow as pa

from ._batch import Batch, DeadRecord
from ._contracts import Step, StepOutput, cancellation_point
from ._signals import RetriesExhausted


def dead_record(record: Any, error: BaseException, row_id: int | None) -> DeadRecord:
    """A dead letter for ``record``, with attempts and times when retries ran out."""
    if isinstance(error, RetriesExhausted):
        return DeadRecord(record, type(error.error).__name__, str(error), row_id,
                          attempts=error.attempts, first_at=error.first_at,
                          last_at=error.last_at)
    return DeadRecord(record, type(error).__name__, str(error), row_id)


def collect_results(batch: Batch, rows: list[dict[str, Any]], results: list[Any],
                    what: str) -> StepOutput:
    """``results[i]`` is record i's outcome: a dict (kept), None (filtered out) or an
    exception (dead-lettered with ``rows[i]``). ``what`` names the producer in the message
    for anything else."""
    out: list[dict[str, Any]] = []
    kept: list[int] = []
    dead: list[DeadRecord] = []
    filtered = 0
    for i, result in enumerate(results):
        if isinstance(result, dict):
            out.append(result)
            kept.append(i)
        elif result is None:
            filtered += 1
        elif isinstance(result, BaseException):
            dead.append(dead_record(rows[i], result, batch.row_id(i)))
        else:
            dead.append(DeadRecord(
                rows[i], "TypeError",
                f"{what} returned {type(result).__name__}, expected a dict or None",
                batch.row_id(i)))
    row_ids = batch.row_ids
    if row_ids is not None and len(kept) != len(rows):
        row_ids = row_ids[np.asarray(kept, dtype=np.int64)]
    try:
        # Back to Arrow right away: a batch of dicts would hold ~1 KB per record for as
        # long as it waits in the channels downstream.
        return StepOutput(batch.derive(table=pa.Table.from_pylist(out), row_ids=row_ids),
                          filtered, dead)
    except (pa.ArrowException, TypeError, ValueError):
        return StepOutput(batch.derive(rows=out, row_ids=row_ids), filtered, dead)


class RecordStep(Step):
    """A step written one record at a time, sync or async.

    Implement ``process_record(record) -> dict | None`` (runs in a worker thread) or
    ``async process_record_async(record)`` (runs on the event loop, up to ``max_in_flight``
    records of a batch at once). Return the record to pass on (changed or not), ``None`` to
    filter it out; raise to dead-letter it with the exception's type and message.
    """

    batch_format: Literal["arrow", "rows"] = "rows"
    splittable: ClassVar[bool] = False  # each record already fails on its own
    max_in_flight: ClassVar[int] = 16

    def process_record(self, record: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError(f"{type(self).__name__} implements neither "
                                  "process_record nor process_record_async")

    async def process_record_async(self, record: dict[str, Any]) -> dict[str, Any] | None:
        return self.process_record(record)

    @property
    def is_async(self) -> bool:
        return type(self).process_record_async is not RecordStep.process_record_async

    def process(self, batch: Batch) -> StepOutput:
        rows = batch.to_rows()
        results: list[Any] = []
        for index, row in enumerate(rows):
            if index % 256 == 0:
                cancellation_point()
            try:
                results.append(self.process_record(row))
            except Exception as exc:
                results.append(exc)
        return collect_results(batch, rows, results, type(self).__name__)

    async def process_async(self, batch: Batch) -> StepOutput:
        if not self.is_async:
            return self.process(batch)
        rows = batch.to_rows()
        results: list[Any] = [None] * len(rows)
        limit = anyio.Semaphore(self.max_in_flight)

        async def one(index: int) -> None:
            async with limit:
                try:
                    results[index] = await self.process_record_async(rows[index])
                except Exception as exc:
                    results[index] = exc

        async with anyio.create_task_group() as tg:
            for index in range(len(rows)):
                tg.start_soon(one, index)
        return collect_results(batch, rows, results, type(self).__name__)
