"""Records as JSON sees them, and validation errors as dead-letter text.

Every checker validates the JSON a record stands for, so the vectorised and the per-record
paths, and ``headrace infer``, agree on one mapping from Arrow values:

=====================  ============================================================
Arrow                  JSON
=====================  ============================================================
int*, uint*            integer
float*, decimal        number; NaN and +/-Infinity are not JSON numbers: they are null
                       (an integral float such as ``3.0`` is an integer, as JSON Schema
                       says: ``{"type": "integer"}`` accepts it)
string                 string
bool                   boolean (never a number)
timestamp              string, RFC 3339 (``2024-03-01T10:00:00Z``; a timestamp without a
                       time zone is taken as UTC), so ``format: date-time`` holds
date32/date64          string ``YYYY-MM-DD`` (``format: date``)
time, duration         string ``HH:MM:SS[.ffffff]``; duration: a number of seconds
binary                 string, decoded as UTF-8 (invalid bytes replaced)
list, struct, map      array, object, array of ``[key, value]`` pairs
null                   null
=====================  ============================================================
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

FieldError = tuple[str, str]  # (path such as "$.items[0].sku", message)


def jsonable(value: Any) -> Any:
    """``value`` (from ``to_pylist``) as the JSON value it stands for (table above)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value  # Decimal: a number to jsonschema-rs


def _plain(arrow_type: pa.DataType) -> bool:
    """Whether ``to_pylist`` already gives JSON values for this type (no conversion)."""
    t = arrow_type
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_boolean(t) or pa.types.is_null(t))


def column_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """One column as JSON values."""
    values = column.to_pylist()
    if _plain(column.type):
        return values
    if pa.types.is_floating(column.type):
        isfinite = math.isfinite
        return [v if v is None or isfinite(v) else None for v in values]
    return [jsonable(v) for v in values]


def table_records(table: pa.Table) -> list[dict[str, Any]]:
    """Every row of ``table`` as a JSON object, converted column by column."""
    names = table.column_names
    columns = [column_values(table.column(i)) for i in range(table.num_columns)]
    if not columns:
        return [{} for _ in range(table.num_rows)]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def rows_records(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of a rows batch as JSON objects."""
    return [{str(k): jsonable(v) for k, v in row.items()} for row in rows]


def format_path(parts: Sequence[str | int]) -> str:
    """``["items", 0, "sku"]`` -> ``$.items[0].sku``; odd keys quoted: ``$["a b"]``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENT.match(part):
            text += f".{part}"
        else:
            text += "[" + _quote(part) + "]"
    return text


def _quote(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def join_errors(errors: Sequence[FieldError]) -> str:
    """The dead letter's message: ``$.price: ...; $.email: ...``."""
    return "; ".join(f"{path}: {message}" for path, message in errors)
