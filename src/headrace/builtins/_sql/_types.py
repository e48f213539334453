"""Database types <-> Arrow, and the JSON form of keyset-pagination keys.

Postgres -> Arrow (the ``postgres`` source):

======================================  ==========================================
int2 / int4 / int8 (oid)                int16 / int32 / int64
float4 / float8                         float32 / float64
numeric                                 float64 (default), or ``numeric: string``
                                        (exact text), or ``numeric: decimal(P,S)``
bool                                    bool
text, varchar, char, name, citext       string
timestamp / timestamptz                 timestamp[us] / timestamp[us, UTC]
date / time                             date32 / time64[us]
json / jsonb                            string (the JSON text)
bytea                                   binary
uuid, interval, enums, anything else    string (the value's text)
arrays of the above                     list<the element's type>
======================================  ==========================================
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

_PG_SCALARS: dict[str, pa.DataType] = {
    "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64(),
    "float4": pa.float32(), "float8": pa.float64(), "bool": pa.bool_(),
    "text": pa.string(), "varchar": pa.string(), "bpchar": pa.string(), "name": pa.string(),
    "citext": pa.string(), "char": pa.string(),
    "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(), "time": pa.time64("us"),
    "json": pa.string(), "jsonb": pa.string(), "bytea": pa.binary(),
}
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")


def numeric_type(setting: str) -> pa.DataType:
    """What ``numeric`` columns become: ``float``, ``string`` or ``decimal(P,S)``."""
    if setting == "float":
        return pa.float64()
    if setting == "string":
        return pa.string()
    match = _DECIMAL.match(setting.replace(" ", ""))
    if not match:
        raise ValueError(f"numeric: {setting!r} is not float, string or decimal(P,S)")
    precision, scale = int(match[1]), int(match[2])
    if not 1 <= precision <= 76 or scale > precision:
        raise ValueError(f"numeric: decimal({precision},{scale}): precision 1..76, scale <= "
                         "precision")
    return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)


def arrow_type_of_pg(name: str, kind: str, numeric: pa.DataType) -> pa.DataType:
    """The Arrow type of a Postgres type (asyncpg's ``Type.name`` and ``.kind``)."""
    if kind == "array" and name.endswith("[]"):
        return pa.list_(arrow_type_of_pg(name[:-2], "scalar", numeric))
    if name == "numeric":
        return numeric
    return _PG_SCALARS.get(name, pa.string())


def _to_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _to_bool(value: Any) -> bool:
    if value in (0, 1):  # SQLite's booleans
        return bool(value)
    raise TypeError(f"{value!r} is not a boolean")


def python_converter(kind: pa.DataType) -> Callable[[Any], Any] | None:
    """How to turn a driver's value into one Arrow accepts as ``kind`` (None: as it is)."""
    if pa.types.is_string(kind):
        return _to_text
    if pa.types.is_floating(kind):
        return lambda v: None if v is None else float(v)
    if pa.types.is_boolean(kind):
        return lambda v: v if v is None or isinstance(v, bool) else _to_bool(v)
    if pa.types.is_list(kind):
        inner = python_converter(kind.value_type)
        if inner is None:
            return None
        return lambda v: None if v is None else [inner(x) for x in v]
    return None


def arrow_column(values: list[Any], kind: pa.DataType) -> pa.Array:
    convert = python_converter(kind)
    if convert is not None:
        values = [convert(v) for v in values]
    return pa.array(values, type=kind)


# -- Arrow -> Postgres (the sink's CREATE TABLE) ------------------------------------------------

def pg_type_of_arrow(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_int8(kind) or pa.types.is_int16(kind) or pa.types.is_uint8(kind):
        return "smallint"
    if pa.types.is_int32(kind) or pa.types.is_uint16(kind):
        return "integer"
    if pa.types.is_int64(kind) or pa.types.is_uint32(kind):
        return "bigint"
    if pa.types.is_uint64(kind):
        return "numeric(20,0)"
    if pa.types.is_float16(kind) or pa.types.is_float32(kind):
        return "real"
    if pa.types.is_floating(kind):
        return "double precision"
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision},{kind.scale})"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_time(kind):
        return "time"
    if pa.types.is_duration(kind):
        return "interval"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or \
            pa.types.is_fixed_size_binary(kind):
        return "bytea"
    if pa.types.is_nested(kind):
        return "jsonb"
    return "text"  # strings, nulls, anything else as its text


# -- values for the driver (the sink) ---------------------------------------------------------

_TEXT_TYPES = ("text", "character varying", "character", "citext", "name", "uuid")


def pg_value_converter(pg_type: str) -> Callable[[Any], Any] | None:
    """How to turn a Python value from Arrow into one asyncpg binds to ``pg_type``
    (``format_type`` text); None when it takes it as it is."""
    base = pg_type.split("(", maxsplit=1)[0].strip()
    if base in ("json", "jsonb"):
        return lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str)
    if base in _TEXT_TYPES:
        return _to_text
    if base == "timestamp with time zone":
        return lambda v: v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) and \
            v.tzinfo is None else v
    if base == "timestamp without time zone":
        return lambda v: v.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(
            v, dt.datetime) and v.tzinfo is not None else v
    if base == "numeric":
        return lambda v: v if v is None or isinstance(v, decimal.Decimal) else \
            decimal.Decimal(str(v))
    return None


# -- keys in resume tokens --------------------------------------------------------------------

def encode_key(value: Any) -> dict[str, Any]:
    """A pagination key as JSON (``{"type": ..., "value": ...}``) for a resume token."""
    if isinstance(value, bool) or value is None:
        return {"type": "json", "value": value}
    if isinstance(value, int | float | str):
        return {"type": "json", "value": value}
    if isinstance(value, dt.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, bytes):
        return {"type": "bytes", "value": value.hex()}
    import uuid

    if isinstance(value, uuid.UUID):
        return {"type": "uuid", "value": str(value)}
    raise ValueError(f"cannot resume after a key of type {type(value).__name__}: use a key "
                     "column of an integer, text, date, timestamp, numeric or uuid type")


def decode_key(token: dict[str, Any]) -> Any:
    kind, value = token["type"], token["value"]
    if kind == "json":
        return value
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "decimal":
        return decimal.Decimal(value)
    if kind == "bytes":
        return bytes.fromhex(value)
    if kind == "uuid":
        import uuid

        return uuid.UUID(value)
    raise ValueError(f"unknown key type {kind!r} in the resume token")
