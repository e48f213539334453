"""Per-record results of a step -> its output batch and dead letters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from headrace.plugin import Batch, DeadRecord, RetriesExhausted, StepOutput


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
