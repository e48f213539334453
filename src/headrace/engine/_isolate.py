"""Find the records at fault when a step rejects a whole batch.

The batch is split in halves and each half processed again, down to single records; good
records go on, and each bad one becomes a dead letter with the error it raised alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from headrace.plugin import Batch, DataError, DeadRecord, StepOutput

ProcessFn = Callable[[Batch], Awaitable[StepOutput]]


def error_name(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, DataError) and exc.__cause__ else exc
    return type(cause).__name__


async def process_isolating(process: ProcessFn, batch: Batch) -> StepOutput:
    """``process(batch)``; on ``DataError`` split the batch until the bad records are alone."""
    try:
        return await process(batch)
    except DataError as exc:
        return await _split(process, batch, exc)


async def _split(process: ProcessFn, batch: Batch, error: DataError) -> StepOutput:
    n = batch.num_rows
    if n <= 1:
        dead = [DeadRecord(batch.record(0), error_name(error), str(error), batch.row_id(0))]
        return StepOutput(batch=batch.slice(0, 0), dead=dead if n else [])
    mid = n // 2
    outputs = [
        await process_isolating(process, batch.slice(0, mid)),
        await process_isolating(process, batch.slice(mid, n)),
    ]
    return StepOutput(
        batch=Batch.concat([o.batch for o in outputs]),
        filtered=sum(o.filtered for o in outputs),
        dead=[d for o in outputs for d in o.dead],
    )


async def process_whole(process: ProcessFn, batch: Batch) -> StepOutput:
    """For steps that must not be split (``splittable = False``): on ``DataError`` every
    record of the batch is a dead letter with that error."""
    try:
        return await process(batch)
    except DataError as exc:
        dead = [DeadRecord(record, error_name(exc), str(exc), batch.row_id(i))
                for i, record in enumerate(batch.to_rows())]
        return StepOutput(batch=batch.slice(0, 0), dead=dead)
