"""The ``pandas`` step: a function ``DataFrame -> DataFrame`` applied to each batch.

Row identity is the DataFrame index: the function receives the batch indexed 0..n-1, and a
returned row whose index label is one of those *is* that input record (its row id, for dead
letters further on, follows it). Dropping rows filters them; reordering keeps identities;
a label that is not an input position (a new or duplicated row) is refused: every output
row must stand for an input record, or the run's accounting would not add up.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from headrace.errors import ConfigValueError, StepError
from headrace.plugin import Batch, DeadRecord, Options, Step, StepOutput

from .._imports import load_function
from ._convert import Backend, ConversionFaults, frame_to_table, import_pandas, to_frame
from ._faults import run_isolating

FUNCTION_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class PandasOptions(Options):
    function: str = Field(
        pattern=FUNCTION_PATTERN,
        description="module:callable, f(DataFrame) -> DataFrame; the module may sit next to "
        "the pipeline file.",
    )
    dtype_backend: Backend = Field(
        default="pyarrow",
        description="pyarrow: pd.ArrowDtype columns over the batch's buffers (fast, nulls "
        "stay NA); numpy: classic numpy dtypes (a copy; ints with nulls become float).",
    )
    expect_columns: list[str] | None = Field(
        default=None, description="Columns the returned DataFrame must have.")


def input_positions(index: Any, n: int) -> np.ndarray | None:
    """The input positions the returned rows are, or None if some are not input rows."""
    pd = import_pandas()
    if len(index) == 0:
        return np.empty(0, dtype=np.int64)
    if not pd.api.types.is_integer_dtype(index.dtype) or not index.is_unique:
        return None
    positions = np.asarray(index, dtype=np.int64)
    if positions.min() < 0 or positions.max() >= n:
        return None
    return positions


class PandasStep(Step):
    """Runs your pandas function on each batch as a DataFrame."""

    summary = "run a pandas function (DataFrame -> DataFrame) on each batch"
    Options: ClassVar[type[PandasOptions]] = PandasOptions
    options: PandasOptions
    supported_executors = frozenset({"async", "thread", "process"})
    example: ClassVar[dict[str, Any]] = {"function": "scoring:add_score",
                                         "expect_columns": ["score"]}

    def __init__(self, options: PandasOptions, context: Any) -> None:
        super().__init__(options, context)
        self.function = load_function(options.function, context.where("function"))
        if inspect.iscoroutinefunction(self.function):
            raise ConfigValueError(f"{context.where('function')}: {options.function} is async; "
                                   "a pandas step calls a plain def")
        import_pandas()  # a missing pandas is a config error, before the run starts

    @property
    def label(self) -> str:
        return f"step '{self.context.plugin_id}': {self.options.function}"

    def _run(self, batch: Batch) -> StepOutput:
        pd = import_pandas()
        table = batch.to_arrow()
        result = self.function(to_frame(table, self.options.dtype_backend))
        if not isinstance(result, pd.DataFrame):
            raise StepError(f"{self.label} returned {type(result).__name__}, expected a "
                            "pandas DataFrame")
        n = batch.num_rows
        positions = input_positions(result.index, n)
        if positions is None:  # every output row must be an input record (the accounting)
            raise StepError(
                f"{self.label} returned {len(result)} rows for a batch of {n}, not all of "
                "them input rows (new or duplicated index labels)",
                hint="a pandas step may drop and reorder rows, not add them; keep the index "
                "(no reset_index)")
        self._check_columns(result)
        try:
            out = frame_to_table(result, table.schema)
            dead: list[DeadRecord] = []
        except ConversionFaults as exc:
            out, dead, positions = self._without_faults(batch, result, positions, exc)
        row_ids = None
        if batch.row_ids is not None:
            row_ids = batch.row_ids[positions]
        return StepOutput(batch.derive(table=out, row_ids=row_ids),
                          filtered=n - len(result), dead=dead)

    def _check_columns(self, result: Any) -> None:
        names = list(result.columns)
        odd = [c for c in names if not isinstance(c, str)]
        if odd:
            raise StepError(f"{self.label} returned column names that are not strings: "
                            f"{odd[:3]}")
        if len(set(names)) != len(names):
            twice = sorted({c for c in names if names.count(c) > 1})
            raise StepError(f"{self.label} returned duplicate columns: {twice}")
        missing = [c for c in self.options.expect_columns or () if c not in names]
        if missing:
            raise StepError(f"{self.label} returned no column {', '.join(map(repr, missing))} "
                            f"(expect_columns; it returned: {', '.join(names)})")

    def _without_faults(self, batch: Batch, result: Any, positions: np.ndarray,
                        exc: ConversionFaults) -> tuple[pa.Table, list[DeadRecord], np.ndarray]:
        """The rows whose values do not convert become dead letters (as their input records)."""
        bad = sorted(exc.faults)
        dead = [DeadRecord(batch.record(int(positions[p])), "ConversionError",
                           f"{self.options.function}: {exc.faults[p]}",
                           batch.row_id(int(positions[p]))) for p in bad]
        keep = np.setdiff1d(np.arange(len(result)), np.asarray(bad, dtype=np.int64))
        try:
            out = frame_to_table(result.iloc[keep], batch.to_arrow().schema)
        except ConversionFaults as again:
            raise StepError(f"{self.label}: {next(iter(again.faults.values()))}") from None
        return out, dead, positions[keep]

    def process(self, batch: Batch) -> StepOutput:
        return run_isolating(self._run, batch)
