"""The ``rebatch`` step (also ``batch``): merges small batches and splits big ones.

An output batch cannot end in the middle of an input batch and still carry a checkpoint
position, so the step only ever releases at an input boundary: it collects input batches
until they hold at least the target number of rows, then cuts everything it holds into
``ceil(total / target)`` batches of (almost) equal size -- each between half the target and
the target -- and releases them together. Only the last batch of the run may be smaller.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from headrace.config import ByteSize
from headrace.plugin import Batch, Options, PluginContext, Step, StepOutput


class RebatchOptions(Options):
    rows: int | None = Field(default=None, gt=0, le=100_000_000,
                             description="At most this many records an output batch.")
    size: ByteSize | None = Field(
        default=None, alias="bytes", gt=0,
        description="At most about this many bytes (Arrow's in-memory size) an output batch.")

    @model_validator(mode="after")
    def _some_target(self) -> RebatchOptions:
        if self.rows is None and self.size is None:
            raise ValueError("give rows, bytes or both")
        return self


def cut_sizes(total: int, target: int) -> list[int]:
    """``total`` rows in ``ceil(total / target)`` nearly equal parts (larger ones first)."""
    parts = -(-total // target)
    small, larger = divmod(total, parts)
    return [small + 1] * larger + [small] * (parts - larger)


class RebatchStep(Step):
    """Re-cuts batches to ``rows`` records and/or ``bytes``; keeps row ids and order."""

    summary = "merge small batches and split big ones (rows and/or bytes)"
    example = {"rows": 10000}
    Options: ClassVar[type[RebatchOptions]] = RebatchOptions
    options: RebatchOptions
    regroups = True
    thread_safe = False

    def __init__(self, options: RebatchOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.pending: list[Batch] = []
        self.rows = 0

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        return schema

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        return needed

    def _target(self) -> int:
        """Rows an output batch may hold, from ``rows`` and the pending rows' average size."""
        target = self.options.rows or 1 << 62
        if self.options.size is not None and self.rows:
            nbytes = sum(b.to_arrow().nbytes for b in self.pending)
            target = min(target, max(1, int(self.options.size * self.rows / max(nbytes, 1))))
        return target

    def process(self, batch: Batch) -> StepOutput:
        self.pending.append(batch)
        self.rows += batch.num_rows
        target = self._target()
        if self.rows < target:
            return StepOutput(batch=batch.slice(0, 0), released=False)
        return self._emit(target)

    async def flush(self) -> StepOutput | None:
        return self._emit(self._target()) if self.rows else None

    def _emit(self, target: int) -> StepOutput:
        pending, self.pending, self.rows = self.pending, [], 0
        tables = [b.to_arrow() for b in pending]
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 \
            else tables[0]
        has_ids = all(b.row_ids is not None for b in pending)
        ids = np.concatenate([b.row_ids for b in pending]) if has_ids else None
        outs, start = [], 0
        for size in cut_sizes(table.num_rows, target):
            out = Batch.from_arrow(table.slice(start, size),
                                   row_ids=None if ids is None else ids[start: start + size])
            out.records_before = pending[0].records_before
            outs.append(out)
            start += size
        return StepOutput(batch=outs[0], more=outs[1:])
