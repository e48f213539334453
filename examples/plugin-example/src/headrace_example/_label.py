"""The ``example-label`` step: a label for each record, from where a number falls among bounds."""

from __future__ import annotations

from functools import reduce
from typing import Any, ClassVar, Self

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from headrace.errors import ConfigValueError
from headrace.plugin import Batch, DataError, DeadRecord, Options, Step, StepOutput


class LabelOptions(Options):
    column: str = Field(default="value", min_length=1, description="The numeric column to label.")
    thresholds: list[float] = Field(
        default=[25.0, 75.0], min_length=1,
        description="Ascending bounds between labels; a value on a bound gets the upper label.",
    )
    labels: list[str] = Field(
        default=["low", "normal", "high"], description="One more than thresholds, lowest first."
    )
    into: str = Field(default="label", min_length=1, description="The column the label goes in.")

    @model_validator(mode="after")
    def _labels_fit_thresholds(self) -> Self:
        if len(self.labels) != len(self.thresholds) + 1:
            raise ValueError(f"{len(self.thresholds)} thresholds need "
                             f"{len(self.thresholds) + 1} labels, not {len(self.labels)}")
        if self.thresholds != sorted(self.thresholds):
            raise ValueError("thresholds must be in ascending order")
        return self


class LabelStep(Step):
    """Vectorised over the whole batch with ``pyarrow.compute``. A record without a value is
    a dead letter; a text that is not a number raises ``DataError``, and the engine splits
    the batch to find the records at fault."""

    summary = "label records by where a numeric column falls among thresholds"
    Options: ClassVar[type[LabelOptions]] = LabelOptions
    options: LabelOptions
    example: ClassVar[dict[str, Any] | None] = {"thresholds": [50.0], "labels": ["low", "high"]}
    thread_safe = True  # process() keeps no state: batches may run in parallel threads

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """Checked by ``headrace validate`` and before a run: the column must be there."""
        self._check_column(schema)
        fields = [f for f in schema if f.name != self.options.into]
        return pa.schema([*fields, pa.field(self.options.into, pa.string())])

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        self._check_column(table.schema)
        values = self._numbers(table.column(self.options.column))
        present = pc.is_valid(values)
        dead = [self._missing(batch, int(i))
                for i in pc.indices_nonzero(pc.invert(present)).to_pylist()]
        row_ids = batch.row_ids
        if dead:
            keep = pc.indices_nonzero(present)
            table, values = table.take(keep), values.take(keep)
            row_ids = row_ids[keep.to_numpy()] if row_ids is not None else None
        # The label's index is how many thresholds the value reaches: 0 .. len(thresholds).
        reached = (pc.cast(pc.greater_equal(values, t), pa.int8())
                   for t in self.options.thresholds)
        labels = pa.array(self.options.labels, pa.string()).take(reduce(pc.add, reached))
        index = table.schema.get_field_index(self.options.into)
        table = (table.set_column(index, self.options.into, labels) if index >= 0
                 else table.append_column(self.options.into, labels))
        self.context.emit("labelled", table.num_rows)  # -> the summary and Prometheus
        if dead:
            self.context.emit("missing", len(dead))
        return StepOutput(batch=batch.derive(table=table, row_ids=row_ids), dead=dead)

    def _check_column(self, schema: pa.Schema) -> None:
        """A wrong column is the pipeline's fault, not the records': an error, not dead letters."""
        name, where = self.options.column, self.context.where("column")
        if name not in schema.names:
            raise ConfigValueError(f"{where}: no column {name!r} in the step's input "
                                   f"({', '.join(schema.names)})")
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_decimal(kind) or pa.types.is_string(kind)
                or pa.types.is_null(kind)):
            raise ConfigValueError(f"{where}: column {name!r} is {kind}, not a number")

    def _numbers(self, column: pa.ChunkedArray) -> pa.ChunkedArray:
        try:
            return pc.cast(column, pa.float64())
        except pa.ArrowInvalid as exc:  # a text that is no number: some records are at fault
            raise DataError(f"{self.options.column}: not a number: {exc}") from exc

    def _missing(self, batch: Batch, index: int) -> DeadRecord:
        return DeadRecord(batch.record(index), "MissingValue",
                          f"{self.options.column} is null", batch.row_id(index))
