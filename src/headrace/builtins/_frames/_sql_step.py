"""The ``sql`` step: a whole SELECT over each batch."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from headrace.errors import ExpressionError, HeadraceError, StepError
from headrace.plugin import Batch, DataError, Options, Step, StepOutput, empty_table

from ._faults import run_isolating
from ._query import check_query, run_query


class SqlOptions(Options):
    query: str = Field(
        min_length=1,
        description="One SELECT over the table `batch` (each batch on its own); its result "
        "replaces the batch.",
    )


class SqlStep(Step):
    """Replaces each batch by the result of a SELECT over it (DuckDB, no file access).

    Its output rows are new records: they carry no row ids, so a later step's dead letters
    name no line. Fewer rows out than in count as filtered.
    """

    summary = "a SQL SELECT over each batch (aggregate, reshape, join to itself)"
    Options: ClassVar[type[SqlOptions]] = SqlOptions
    options: SqlOptions
    example: ClassVar[dict[str, Any]] = {
        "query": "SELECT carrier, avg(dep_delay) AS mean_delay FROM batch GROUP BY carrier"}

    def __init__(self, options: SqlOptions, context: Any) -> None:
        super().__init__(options, context)
        try:
            check_query(options.query)
        except ExpressionError as exc:
            exc.message = f"{context.where('query')}: query: {exc.message}"
            raise

    @property
    def label(self) -> str:
        return f"step '{self.context.plugin_id}'"

    def _run(self, batch: Batch) -> StepOutput:
        try:
            out = run_query(batch.to_arrow(), self.options.query)
        except ExpressionError as exc:
            exc.message = f"{self.label} query: {exc.message}"
            raise
        n, m = batch.num_rows, out.num_rows
        if m > n:  # every output row must stand for an input record (the accounting)
            raise StepError(
                f"{self.label}: the query made {m} rows from a batch of {n}",
                hint="a sql step may drop, merge or reshape rows but not add them (UNNEST, "
                "self-joins)")
        return StepOutput(batch.derive(table=out), filtered=n - m)

    def process(self, batch: Batch) -> StepOutput:
        return run_isolating(self._run, batch, faults=(DataError,))

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        try:
            return run_query(empty_table(schema), self.options.query).schema
        except HeadraceError:
            raise
        except Exception as exc:  # a DataError on no rows at all: a problem of the query
            raise ExpressionError(f"query: {exc}") from None
