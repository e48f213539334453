"""Finding the records a whole-batch call fails on, then calling once more without them.

The engine's own isolation (``engine/_isolate.py``) splits a failing batch and joins the
outputs of the halves; a step that reshapes the batch (a ``GROUP BY``, a function that looks
at several rows) would then see halves instead of the batch. These steps isolate on their own:
they bisect only to *find* the records at fault, then run the call once on all the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from headrace.errors import HeadraceError
from headrace.plugin import Batch, DataError, DeadRecord, StepOutput, cancellation_point

T = TypeVar("T")
Faults = tuple[type[Exception], ...]


def error_name(exc: BaseException) -> str:
    """The type a dead letter names: the cause of a ``DataError`` (``ConversionException``)."""
    if isinstance(exc, DataError) and exc.__cause__ is not None:
        return type(exc.__cause__).__name__
    return type(exc).__name__


def find_faults(
    attempt: Callable[[int, int], BaseException | None], start: int, stop: int,
    error: BaseException,
) -> list[tuple[int, BaseException]]:
    """Positions in ``[start, stop)`` whose record fails alone, each with its error.

    ``attempt(a, b)`` runs the call on records ``a..b-1`` and returns what it raised (None if
    it worked); ``error`` is what the whole range raised already.
    """
    if stop - start <= 1:
        return [(start, error)] if stop > start else []
    cancellation_point()
    mid = (start + stop) // 2
    faults: list[tuple[int, BaseException]] = []
    for a, b in ((start, mid), (mid, stop)):
        failed = attempt(a, b)
        if failed is not None:
            faults += find_faults(attempt, a, b, failed)
    return faults


def without(batch: Batch, positions: list[int]) -> Batch:
    """``batch`` less the records at ``positions`` (sorted), keeping the others' row ids."""
    keep = np.setdiff1d(np.arange(batch.num_rows), np.asarray(positions, dtype=np.int64))
    table = batch.to_arrow().take(keep)
    ids = batch.row_ids[keep] if batch.row_ids is not None else None
    return batch.derive(table=table, row_ids=ids)


def dead_letters(batch: Batch, faults: list[tuple[int, BaseException]]) -> list[DeadRecord]:
    return [DeadRecord(batch.record(i), error_name(exc), str(exc), batch.row_id(i))
            for i, exc in faults]


def isolate(run: Callable[[Batch], T], batch: Batch, error: BaseException,
            faults: Faults = (Exception,)) -> tuple[Batch, list[DeadRecord], T | None]:
    """After ``run(batch)`` raised ``error``: the records at fault as dead letters, and
    ``run`` of the rest (None when nothing is left).

    If no record fails alone (the call fails only on records together), every record of
    the batch is dead-lettered with ``error``: nothing is lost, and the message says why.
    """

    def attempt(a: int, b: int) -> BaseException | None:
        try:
            run(batch.slice(a, b))
        except HeadraceError:  # a broken contract (a wrong return type) fails the run
            raise
        except faults as exc:  # the call's own failure on these records
            return exc
        return None

    found = find_faults(attempt, 0, batch.num_rows, error)
    if not found:
        return batch.slice(0, 0), dead_letters(batch, _all(batch, error)), None
    rest = without(batch, [i for i, _ in found])
    if rest.num_rows == 0:
        return rest, dead_letters(batch, found), None
    try:
        return rest, dead_letters(batch, found), run(rest)
    except HeadraceError:
        raise
    except faults as again:  # fails only on records together: dead-letter them all
        return batch.slice(0, 0), dead_letters(batch, _all(batch, again)), None


def _all(batch: Batch, error: BaseException) -> list[tuple[int, BaseException]]:
    return [(i, error) for i in range(batch.num_rows)]


def run_isolating(run: Callable[[Batch], StepOutput], batch: Batch,
                  faults: Faults = (Exception,)) -> StepOutput:
    """``run(batch)``; if it raises one of ``faults`` (never headrace's own errors), the
    records at fault become dead letters and the others are run again together."""
    try:
        return run(batch)
    except HeadraceError:
        raise
    except faults as exc:  # the call's own failure: find the records that cause it
        rest, dead, out = isolate(run, batch, exc, faults)
    if out is None:
        return StepOutput(rest, dead=dead)
    return StepOutput(out.batch, filtered=out.filtered, dead=[*dead, *out.dead])
