"""A starting JSON Schema (draft 2020-12) from a sample of a file, read by the same sources
a run uses, so the types are the ones ``validate`` will see.

What is inferred: each column's JSON type from its Arrow type (the mapping in ``_values``);
``required`` for columns without nulls in the sample, ``"null"`` added to the type where
nulls (or NaN) were seen; ``enum`` for strings with at most ``ENUM_MAX`` distinct values over
at least ``ENUM_MIN_ROWS`` non-null values. Observed numeric ranges are a guess from a
sample, so they are ``examples`` (an annotation) unless ``bounds`` asks for
``minimum``/``maximum``. Nothing else (lengths, patterns, formats of text) is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from headrace.errors import ConfigValueError

ENUM_MAX = 10
ENUM_MIN_ROWS = 100
DRAFT = "https://json-schema.org/draft/2020-12/schema"
FORMATS = ("csv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl",
             ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".zst", ".bz2")


@dataclass(frozen=True)
class Inferred:
    schema: dict[str, Any]
    rows: int  # records in the sample
    rejected: int  # lines of the sample the source could not read (they are not in it)


def guess_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    return _SUFFIXES.get(suffixes[-1]) if suffixes else None


def infer_file(path: Path, *, rows: int = 10_000, fmt: str | None = None,
               bounds: bool = False) -> Inferred:
    """Read up to ``rows`` records of ``path`` and infer their schema."""
    import anyio

    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise ConfigValueError(f"{path}: cannot tell the format from the name",
                               hint="give --format csv, jsonl or parquet")
    if not path.is_file():
        raise ConfigValueError(f"{path}: no such file")
    table, rejected = anyio.run(_sample, path.resolve(), fmt, rows)
    return Inferred(infer_schema(table, bounds=bounds, title=path.name), table.num_rows,
                    rejected)


async def _sample(path: Path, fmt: str, rows: int) -> tuple[pa.Table, int]:
    from headrace.plugin import PluginContext

    from ..sources import CsvSource, JsonlSource, ParquetSource

    cls: Any = {"csv": CsvSource, "jsonl": JsonlSource, "parquet": ParquetSource}[fmt]
    context = PluginContext(plugin_id=f"infer-{fmt}", base_dir=path.parent)
    source = cls(cls.Options.model_validate({"path": str(path)}), context)
    tables: list[pa.Table] = []
    rejects: list[int] = []
    count = 0
    cutoff: int | None = None  # the line of the first record past the sample
    async with source:
        async for batch in source.batches():
            rejects += [r.row_id if r.row_id is not None else -1 for r in batch.rejects]
            tables.append(batch.to_arrow())
            if count + batch.num_rows > rows and batch.row_ids is not None:
                cutoff = int(batch.row_ids[rows - count])
            count += batch.num_rows
            if count >= rows:
                break
    rejected = sum(1 for line in rejects if cutoff is None or line < cutoff)
    if not tables:
        return pa.table({}), rejected
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.slice(0, rows), rejected


def infer_schema(table: pa.Table, *, bounds: bool = False,
                 title: str | None = None) -> dict[str, Any]:
    """The JSON Schema of ``table``'s records (see the module's docstring)."""
    schema: dict[str, Any] = {"$schema": DRAFT}
    if title:
        schema["title"] = title
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name in table.column_names:
        prop, nullable = _column(table.column(name), bounds)
        properties[name] = prop
        if not nullable:
            required.append(name)
    schema.update({"type": "object", "properties": properties, "required": required})
    return schema


def _type_name(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    if pa.types.is_integer(t):
        return {"type": "integer"}
    if pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_duration(t):
        return {"type": "number"}
    if pa.types.is_timestamp(t):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_date(t):
        return {"type": "string", "format": "date"}
    if pa.types.is_null(t):
        return {"type": "null"}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        return {"type": "array"}
    if pa.types.is_struct(t):
        return {"type": "object"}
    return {"type": "string"}  # string, binary, time


def _column(column: pa.ChunkedArray, bounds: bool) -> tuple[dict[str, Any], bool]:
    """The property for ``column`` and whether it may be null."""
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    prop = _type_name(t)
    nulls = column.null_count
    finite = column
    if pa.types.is_floating(t):
        finite = column.filter(pc.is_finite(column))
        nulls = len(column) - len(finite)
    nullable = nulls > 0 or len(column) == 0
    if pa.types.is_null(t):
        return prop, True
    values = len(column) - nulls
    if pa.types.is_struct(t):
        fields = pa.Table.from_batches([pa.RecordBatch.from_struct_array(chunk)
                                        for chunk in column.chunks], schema=pa.schema(list(t)))
        inner = infer_schema(fields, bounds=bounds)
        prop.update(properties=inner["properties"], required=inner["required"])
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        items = pa.chunked_array([pc.list_flatten(c) for c in column.chunks], t.value_type)
        prop["items"] = _column(items, bounds)[0]
    elif prop["type"] == "string" and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        if values >= ENUM_MIN_ROWS:
            distinct = pc.unique(column.drop_null())
            if len(distinct) <= ENUM_MAX:
                prop["enum"] = sorted(distinct.to_pylist())
    elif prop["type"] in ("integer", "number") and not pa.types.is_duration(t) and values:
        low, high = (v.as_py() for v in pc.min_max(finite).values())
        if pa.types.is_decimal(t):
            low, high = float(low), float(high)
        if bounds:
            prop.update(minimum=low, maximum=high)
        else:
            prop["examples"] = [low] if low == high else [low, high]
    if nullable:
        prop["type"] = [prop["type"], "null"]
        if "enum" in prop:
            prop["enum"].append(None)
    return prop, nullable
