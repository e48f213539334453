"""Steps whose logic is SQL over the batch's columns, evaluated vectorised by DuckDB."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from headrace.plugin import (
    Batch,
    Options,
    SqlEvaluator,
    Step,
    StepOutput,
    check_syntax,
    empty_table,
    quote_ident,
    referenced_columns,
)


def _true_positions(mask: pa.ChunkedArray) -> np.ndarray:
    """Indices where ``mask`` (no nulls) is true, unpacked from the Arrow bitmap with numpy.
    (pyarrow's ``to_numpy`` imports pandas and ``pyarrow.compute`` takes ~100 ms to import.)"""
    array = mask.combine_chunks()
    bits = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    flags = np.unpackbits(bits, bitorder="little")[array.offset: array.offset + len(array)]
    return np.flatnonzero(flags)


class FilterOptions(Options):
    where: str = Field(min_length=1, description="SQL condition; records where it is true go on.")


class FilterStep(Step):
    """Keeps the records for which ``where`` is true (null counts as false)."""

    summary = "keep records where a SQL condition holds"
    example = {"where": "score > 0 AND name IS NOT NULL"}
    Options: ClassVar[type[FilterOptions]] = FilterOptions
    options: FilterOptions

    def __init__(self, options: FilterOptions, context: Any) -> None:
        super().__init__(options, context)
        check_syntax(options.where, f"{context.where('where')}: where")
        self.sql = SqlEvaluator(f"step '{context.plugin_id}' where {options.where!r}")

    def _mask(self, table: pa.Table) -> pa.ChunkedArray:
        # COALESCE: null counts as false (and pyarrow's fill_null would import pandas).
        result = self.sql.select(table, f"COALESCE(({self.options.where}), false) AS keep")
        mask = result.column(0)
        if not pa.types.is_boolean(mask.type):
            from headrace.errors import ExpressionError

            raise ExpressionError(f"{self.sql.label}: is {mask.type}, not a condition")
        return mask

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        mask = self._mask(table)
        kept = table.filter(mask)
        row_ids = None
        if batch.row_ids is not None:
            row_ids = batch.row_ids[_true_positions(mask)]
        return StepOutput(
            batch=batch.derive(table=kept, row_ids=row_ids),
            filtered=table.num_rows - kept.num_rows,
        )

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        self._mask(empty_table(schema))
        return schema

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        refs = referenced_columns(self.options.where, available)
        return None if needed is None or refs is None else needed | refs


class DeriveOptions(Options):
    columns: dict[str, str] = Field(
        min_length=1, description="New or replaced columns: name -> SQL expression."
    )


class DeriveStep(Step):
    """Adds or replaces columns computed by SQL expressions over the input columns."""

    summary = "add or replace columns computed by SQL expressions"
    example = {"columns": {"score_pct": "score * 100", "name": "upper(name)"}}
    Options: ClassVar[type[DeriveOptions]] = DeriveOptions
    options: DeriveOptions

    def __init__(self, options: DeriveOptions, context: Any) -> None:
        super().__init__(options, context)
        for name, expression in options.columns.items():
            check_syntax(expression, f"{context.where('columns', name)}: columns.{name}")
        self.derived_columns = dict(options.columns)
        self.select_list = ", ".join(
            f"({expr}) AS {quote_ident(name)}" for name, expr in options.columns.items()
        )
        self.sql = SqlEvaluator(f"step '{context.plugin_id}' columns")

    def _apply(self, table: pa.Table) -> pa.Table:
        derived = self.sql.select(table, self.select_list)
        if derived.column_names != list(self.options.columns):
            from headrace.errors import ExpressionError

            raise ExpressionError(f"{self.sql.label}: each expression must give one column, "
                                  f"got {derived.column_names}")
        for name in self.options.columns:
            column = derived.column(name)
            index = table.schema.get_field_index(name)
            if index >= 0:
                table = table.set_column(index, name, column)
            else:
                table = table.append_column(name, column)
        return table

    def process(self, batch: Batch) -> StepOutput:
        return StepOutput(batch=batch.derive(table=self._apply(batch.to_arrow()),
                                             row_ids=batch.row_ids))

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        return self._apply(empty_table(schema)).schema

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        if needed is None:
            return None
        wanted = set(needed - set(self.derived_columns))
        for expression in self.derived_columns.values():
            refs = referenced_columns(expression, available)
            if refs is None:
                return None
            wanted |= refs
        return frozenset(wanted)


class CastOptions(Options):
    columns: dict[str, str] = Field(
        min_length=1, description="Column -> SQL type (INTEGER, DOUBLE, VARCHAR, DATE, ...)."
    )

    @field_validator("columns")
    @classmethod
    def _types_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for name, type_name in value.items():
            check_syntax(f"CAST(NULL AS {type_name})", f"columns.{name}")
        return value


class CastStep(DeriveStep):
    """Converts columns to SQL types; a value that does not convert makes its record dead."""

    summary = "convert columns to SQL types (bad values go to the dead-letter output)"
    example = {"columns": {"id": "VARCHAR", "score": "DOUBLE"}}
    Options: ClassVar[type[CastOptions]] = CastOptions  # type: ignore[assignment]

    def __init__(self, options: CastOptions, context: Any) -> None:
        casts = {n: f"CAST({quote_ident(n)} AS {t})" for n, t in options.columns.items()}
        super().__init__(DeriveOptions(columns=casts), context)
        self.options = options  # type: ignore[assignment]

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        missing = [n for n in self.options.columns if n not in schema.names]
        if missing:
            from headrace.errors import ExpressionError

            raise ExpressionError(f"cast: no column {missing[0]!r} (columns: {schema.names})")
        return super().output_schema(schema)


class SelectOptions(Options):
    columns: list[str] = Field(min_length=1, description="Columns to keep, in this order.")


def _missing(names: list[str], schema: pa.Schema, step: str) -> None:
    from headrace.config import did_you_mean
    from headrace.errors import ExpressionError

    for name in names:
        if name not in schema.names:
            hint = did_you_mean(name, schema.names)
            raise ExpressionError(
                f"{step}: no column {name!r}" + (f"; {hint}" if hint else "")
                + f" (columns: {', '.join(schema.names)})"
            )


class SelectStep(Step):
    """Keeps the named columns, in the order given."""

    summary = "keep and reorder columns"
    example = {"columns": ["id", "name"]}
    Options: ClassVar[type[SelectOptions]] = SelectOptions
    options: SelectOptions
    default_executor = "async"  # zero-copy: too cheap to be worth a thread hop

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        _missing(self.options.columns, table.schema, f"step '{self.context.plugin_id}'")
        return StepOutput(batch.derive(table=table.select(self.options.columns),
                                       row_ids=batch.row_ids))

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        _missing(self.options.columns, schema, "select")
        return pa.schema([schema.field(c) for c in self.options.columns])

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        return frozenset(self.options.columns)


class RenameOptions(Options):
    columns: dict[str, str] = Field(min_length=1, description="Old name -> new name.")


class RenameStep(Step):
    """Renames columns."""

    summary = "rename columns"
    example = {"columns": {"name": "full_name"}}
    Options: ClassVar[type[RenameOptions]] = RenameOptions
    options: RenameOptions
    default_executor = "async"

    def _names(self, schema: pa.Schema) -> list[str]:
        _missing(list(self.options.columns), schema, f"step '{self.context.plugin_id}'")
        return [self.options.columns.get(n, n) for n in schema.names]

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        return StepOutput(batch.derive(table=table.rename_columns(self._names(table.schema)),
                                       row_ids=batch.row_ids))

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        names = self._names(schema)
        return pa.schema([f.with_name(n) for f, n in zip(schema, names, strict=True)])

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        if needed is None:
            return None
        back = {new: old for old, new in self.options.columns.items()}
        return frozenset(back.get(n, n) for n in needed)

