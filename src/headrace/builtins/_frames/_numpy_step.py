"""The ``numpy`` step: a vectorised function over the batch's columns as numpy arrays.

The function gets a read-only mapping ``name -> numpy array`` (converted when first read,
zero-copy for numeric and temporal columns) and returns a mapping of new or replaced
columns, each as long as the batch. Rows never change, so row ids stay as they are.
A column with nulls arrives as ``numpy.ma.MaskedArray`` (mask = null); a returned masked
array's mask becomes nulls again, while float NaN in a plain array stays NaN.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from headrace.errors import ConfigValueError, StepError
from headrace.plugin import Batch, DeadRecord, Options, Step, StepOutput

from .._imports import load_function
from ._convert import Columns, ConversionFaults, array_to_arrow
from ._faults import run_isolating, without
from ._pandas_step import FUNCTION_PATTERN


class NumpyOptions(Options):
    function: str = Field(
        pattern=FUNCTION_PATTERN,
        description="module:callable, f(columns) -> {name: array}; columns maps each column "
        "name to a numpy array (masked where null).",
    )


class NumpyStep(Step):
    """Runs your vectorised numpy function on each batch's columns."""

    summary = "add or replace columns computed by a numpy function over the batch's columns"
    Options: ClassVar[type[NumpyOptions]] = NumpyOptions
    options: NumpyOptions
    supported_executors = frozenset({"async", "thread", "process"})
    example: ClassVar[dict[str, Any]] = {"function": "score:vector_score"}

    def __init__(self, options: NumpyOptions, context: Any) -> None:
        super().__init__(options, context)
        self.function = load_function(options.function, context.where("function"))
        if inspect.iscoroutinefunction(self.function):
            raise ConfigValueError(f"{context.where('function')}: {options.function} is async; "
                                   "a numpy step calls a plain def")

    @property
    def label(self) -> str:
        return f"step '{self.context.plugin_id}': {self.options.function}"

    def _run(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        result = self.function(Columns(table))
        if not isinstance(result, Mapping):
            raise StepError(f"{self.label} returned {type(result).__name__}, expected a "
                            "mapping of column name -> array")
        n = table.num_rows
        columns: dict[str, pa.Array | pa.ChunkedArray] = {}
        faults: dict[int, str] = {}
        for name, value in result.items():
            self._check_column(name, value, n)
            try:
                columns[name] = array_to_arrow(name, value)
            except ConversionFaults as exc:
                for pos, reason in exc.faults.items():
                    faults.setdefault(pos, reason)
        if faults:
            return self._without_faults(batch, faults)
        for name, column in columns.items():
            index = table.schema.get_field_index(name)
            if index >= 0:
                table = table.set_column(index, name, column)
            else:
                table = table.append_column(name, column)
        return StepOutput(batch.derive(table=table, row_ids=batch.row_ids))

    def _check_column(self, name: Any, value: Any, n: int) -> None:
        if not isinstance(name, str):
            raise StepError(f"{self.label} returned a column named {name!r}, not a string")
        if isinstance(value, pa.Array | pa.ChunkedArray):
            length = len(value)
        else:
            if not isinstance(value, np.ndarray | list | tuple):
                raise StepError(f"{self.label} returned {type(value).__name__} for column "
                                f"{name!r}, expected an array as long as the batch")
            shape = np.shape(value)
            if len(shape) != 1:
                raise StepError(f"{self.label} returned column {name!r} of shape {shape}, "
                                "expected one dimension")
            length = shape[0]
        if length != n:
            raise StepError(f"{self.label} returned column {name!r} with {length} values for "
                            f"a batch of {n}")

    def _without_faults(self, batch: Batch, faults: dict[int, str]) -> StepOutput:
        """Rows with a value that does not convert become dead letters; the others are run
        again (as one batch) without them."""
        bad = sorted(faults)
        dead = [DeadRecord(batch.record(p), "ConversionError",
                           f"{self.options.function}: {faults[p]}", batch.row_id(p))
                for p in bad]
        rest = without(batch, bad)
        if rest.num_rows == 0:
            return StepOutput(rest, dead=dead)
        out = self._run(rest)
        if out.dead:  # the same function now fails to convert other values: it is not data
            raise StepError(f"{self.label}: {out.dead[0].message}")
        return StepOutput(out.batch, dead=dead)

    def process(self, batch: Batch) -> StepOutput:
        return run_isolating(self._run, batch)
