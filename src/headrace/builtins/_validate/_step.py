"""The ``validate`` step: records against a JSON Schema or a pydantic model; invalid ones are
dead-lettered with every failing field, dropped, or stop the run."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from headrace.errors import ConfigValueError, StepError
from headrace.plugin import Batch, DeadRecord, Options, PluginContext, Step, StepOutput

from .._imports import load_object
from ._checkers import Failures, ModelChecker, SchemaChecker
from ._schema import read_schema_file
from ._values import FieldError, format_path, join_errors

ERROR = "ValidationError"


class ValidateOptions(Options):
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="The JSON Schema, inline (a mapping).")
    schema_file: str | None = Field(
        default=None, description="A JSON Schema file, relative to the pipeline file.")
    model: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="module:Class of a pydantic model; the module may sit next to the "
        "pipeline file.")
    mode: Literal["dead_letter", "drop", "fail"] = Field(
        default="dead_letter",
        description="An invalid record: dead_letter (with every failing field), drop (counted "
        "as filtered) or fail (the run stops, naming the record's line).")
    formats: bool = Field(
        default=True, description="Check `format` (date-time, email, ...), not only note it.")
    vectorize: bool = Field(
        default=True, description="Screen columnar batches with Arrow compute where the "
        "schema allows; false: every record through jsonschema-rs (same verdicts, slower).")

    @model_validator(mode="after")
    def _one_source(self) -> ValidateOptions:
        given = [name for name, value in (("schema", self.json_schema),
                                          ("schema_file", self.schema_file),
                                          ("model", self.model)) if value is not None]
        if len(given) != 1:
            what = " and ".join(given) if given else "none of them"
            raise ValueError(f"give exactly one of schema, schema_file or model (got {what})")
        return self


def load_model(path: str, where: str) -> Any:
    obj = load_object(path, where, "model")
    if not isinstance(obj, type):
        raise ConfigValueError(f"{where}: model {path!r} is {type(obj).__name__}, not a class")
    return obj


class ValidateStep(Step):
    """Checks records against a JSON Schema (vectorised where it can) or a pydantic model."""

    summary = "check records against a JSON Schema or a pydantic model"
    Options: ClassVar[type[ValidateOptions]] = ValidateOptions
    options: ValidateOptions
    example: ClassVar[dict[str, Any] | None] = {
        "schema": {"type": "object", "required": ["id"],
                   "properties": {"id": {"type": "integer", "minimum": 1}}},
    }

    def __init__(self, options: ValidateOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.checker: SchemaChecker | ModelChecker
        if options.model is not None:
            model = load_model(options.model, context.where("model"))
            self.checker = ModelChecker(model, context.where("model"), context.emit)
            return
        if options.schema_file is not None:
            path = context.resolve_path(options.schema_file)
            schema, where = read_schema_file(path, context.where("schema_file"))
        else:
            assert options.json_schema is not None
            schema = options.json_schema

            def where(key: tuple[str | int, ...]) -> str:
                return context.where("schema", *key)

        self.checker = SchemaChecker(schema, where, formats=options.formats,
                                     vectorize=options.vectorize, count=context.emit)

    def process(self, batch: Batch) -> StepOutput:
        failures = self._check(batch)
        if not failures:
            return StepOutput(batch)
        self.context.emit("invalid", len(failures))
        if self.options.mode == "fail":
            self._fail(batch, failures)
        bad = np.zeros(batch.num_rows, dtype=bool)
        bad[[index for index, _ in failures]] = True
        kept = np.flatnonzero(~bad)
        row_ids = batch.row_ids[kept] if batch.row_ids is not None else None
        if batch.is_columnar:
            table = batch.to_arrow()
            out = batch.derive(table=table.take(pa.array(kept, pa.int64())), row_ids=row_ids)
            originals = _records(table, [i for i, _ in failures])
        else:
            rows = batch.to_rows()
            out = batch.derive(rows=[rows[i] for i in kept], row_ids=row_ids)
            originals = [rows[i] for i, _ in failures]
        if self.options.mode == "drop":
            return StepOutput(out, filtered=len(failures))
        dead = [DeadRecord(record, ERROR, join_errors(errors), batch.row_id(index))
                for record, (index, errors) in zip(originals, failures, strict=True)]
        return StepOutput(out, dead=dead)

    def _check(self, batch: Batch) -> Failures:
        """The checker's failures, and text that is not UTF-8 (a source that let it through
        would make every later step and the sink fail on it) as failures of its own."""
        if not batch.is_columnar:
            return self.checker.check(batch)
        table = batch.to_arrow()
        broken = _invalid_utf8(table)
        if not broken:
            return self.checker.check(batch)
        rest = np.setdiff1d(np.arange(table.num_rows), [i for i, _ in broken])
        sub = Batch.from_arrow(table.take(pa.array(rest, pa.int64())), position=batch.position)
        found = [(int(rest[i]), errors) for i, errors in self.checker.check(sub)]
        return sorted(found + broken)

    def _fail(self, batch: Batch, failures: Failures) -> None:
        index, errors = failures[0]
        row_id = batch.row_id(index)
        unit = "row" if batch.position is not None and batch.position.unit == "row" else "line"
        where = f"at {unit} {row_id}" if row_id is not None else f"{index + 1} of its batch"
        source = f" of {batch.position.source}" if batch.position is not None else ""
        raise StepError(
            f"step '{self.context.plugin_id}': the record {where}{source} is invalid: "
            f"{join_errors(errors)}",
            hint="mode: dead_letter sends invalid records to the dead-letter file instead")

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        return schema


def _is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _invalid_utf8(table: pa.Table) -> Failures:
    """Rows with a text value that is not valid UTF-8, by column."""
    found: dict[int, list[FieldError]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not _is_text(column.type):
            continue
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        raw = column.cast(pa.large_binary()).to_pylist()
        for index, value in enumerate(raw):
            if value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                found.setdefault(index, []).append(
                    (format_path([name]), f"not valid UTF-8 (byte {exc.start})"))
    return sorted(found.items())


def _records(table: pa.Table, indices: list[int]) -> list[dict[str, Any]]:
    """The records at ``indices`` as Python dicts; text that is not UTF-8 decoded with
    replacement characters (the dead-letter file is UTF-8)."""
    part = table.take(pa.array(indices, pa.int64()))
    try:
        return part.to_pylist()
    except (UnicodeDecodeError, pa.ArrowException):
        columns = [c.cast(pa.large_binary()) if _is_text(c.type) else c for c in part.columns]
        rows = pa.table(columns, names=part.column_names).to_pylist()
        return [{k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                 for k, v in row.items()} for row in rows]

