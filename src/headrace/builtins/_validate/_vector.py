"""Vectorised screening of a columnar batch against a JSON Schema.

The screen computes, with ``pyarrow.compute`` over whole columns, a mask of rows that *may*
fail; only those rows go through jsonschema-rs, which decides and words the errors. The rule
that keeps both paths equal: a row the screen passes is valid (the screen may flag a valid
row - jsonschema-rs then passes it - but never pass an invalid one). Where that cannot be
guaranteed cheaply, the screen flags (a NaN, a non-ASCII string under a ``pattern``), and
where it cannot be done at all, the property is checked per record by jsonschema-rs over
just its own column (``residual``).

Vectorised, per top-level property: ``type`` (with ``"null"``), ``enum``, ``const``,
``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``minLength``,
``maxLength``, ``pattern`` (when RE2 reads it as ECMA 262 does: see ``re2_safe``) and
``format`` ``date-time``/``date`` on timestamp/date columns; at the top: ``required``,
``additionalProperties: true|false``. Any other keyword at the top (``allOf``,
``patternProperties``, ``if``, ...) sends the whole batch per record.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._values import table_records

ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
    "writeOnly", "$anchor",
})
ROOT_KEYWORDS = ANNOTATIONS | {
    "type", "properties", "required", "additionalProperties", "$schema", "$id", "$defs",
    "definitions",
}
PROPERTY_KEYWORDS = ANNOTATIONS | {
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "format",
}
INT64_MAX = 2**63 - 1
EXACT_FLOAT = 2**53  # integers up to this compare exactly as doubles
PRINTABLE_ASCII = r"^[\x20-\x7e]*$"

# Regex syntax RE2 and ECMA 262 read alike on printable ASCII text: literals, classes,
# anchors, groups, alternation, quantifiers, and these escapes. Anything else (lookaround,
# backreferences, \p, \u, \A, \Z, \Q, named groups, inline flags) is checked per record.
_SAFE_ESCAPES = set("dDwWsSbB.\\/-^$*+?()[]{}|tnr")
_SAFE_LITERAL = re.compile(r"[A-Za-z0-9 _.,:;@#%&'\"=<>!~`/-]")


def re2_safe(pattern: str) -> bool:
    """Whether ``pattern`` uses only syntax RE2 and ECMA 262 agree on (and RE2 compiles)."""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in _SAFE_ESCAPES:
                return False
            i += 2
            continue
        if char == "(" and pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
            return False
        if char == "{":  # only {n}, {n,}, {n,m}
            match = re.match(r"\{\d+(,\d*)?\}", pattern[i:])
            if not match:
                return False
            i += match.end()
            continue
        if pattern.startswith(("[]", "[^]"), i):  # ECMA: never / any character
            return False
        if not (char in "^$.*+?()[]|}" or _SAFE_LITERAL.match(char)):
            return False
        i += 1
    try:
        pc.match_substring_regex(pa.array([""]), pattern=pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _types(schema: dict[str, Any]) -> set[str] | None:
    given = schema.get("type")
    if given is None:
        return None
    return {given} if isinstance(given, str) else set(given)


def _json_kind(arrow_type: pa.DataType) -> str | None:
    """What JSON kind a column's values are, for the kinds the screen handles."""
    t = arrow_type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer" if t != pa.uint64() else None
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_null(t):
        return "null"
    return None


@dataclass
class Screen:
    """How one table schema is screened: per-column vectorised checks, and the properties
    left to jsonschema-rs per record (with the sub-schema holding just those)."""

    vector: dict[str, dict[str, Any]] = field(default_factory=dict)
    residual: list[str] = field(default_factory=list)
    residual_validator: Any = None
    flag_all: bool = False  # a required column is missing, or an extra one is forbidden


def plan_screen(schema: dict[str, Any], table_schema: pa.Schema, *, formats: bool,
                compile_sub: Any) -> Screen | None:
    """The screen for tables of ``table_schema``; None when the schema needs whole records."""
    if set(schema) - ROOT_KEYWORDS:
        return None
    root_types = _types(schema)
    if root_types is not None and "object" not in root_types:
        return None
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool):
        return None
    properties: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.get("required", [])
    names = set(table_schema.names)
    screen = Screen()
    if any(name not in names for name in required) or (
            not extra and any(name not in properties for name in names)):
        screen.flag_all = True
        return screen
    for name in table_schema.names:
        prop = properties.get(name)
        if prop is None or prop is True or prop == {}:
            continue
        if _vectorisable(prop, table_schema.field(name).type, formats):
            screen.vector[name] = prop
        else:
            screen.residual.append(name)
    if screen.residual:
        sub = {k: v for k, v in schema.items()
               if k not in ("properties", "required", "additionalProperties")}
        sub["properties"] = {name: properties[name] for name in screen.residual}
        screen.residual_validator = compile_sub(sub)
    return screen


def _numbers_ok(prop: dict[str, Any]) -> bool:
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = prop.get(key)
        if isinstance(bound, int) and abs(bound) > EXACT_FLOAT:
            return False
    return True


def _vectorisable(prop: Any, arrow_type: pa.DataType, formats: bool) -> bool:
    if not isinstance(prop, dict) or set(prop) - PROPERTY_KEYWORDS:
        return False
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    kind = _json_kind(arrow_type)
    if kind is None or not _numbers_ok(prop):
        return False
    string_keys = {"minLength", "maxLength", "pattern", "enum", "const"} & set(prop)
    if kind in ("timestamp", "date") and string_keys:
        return False
    if "pattern" in prop and not re2_safe(prop["pattern"]):
        return False
    fmt = prop.get("format")
    if fmt is not None and formats:
        natural = (kind == "timestamp" and fmt == "date-time") or (kind == "date" and fmt == "date")
        return natural
    return True


def _bool_array(mask: Any, n: int) -> np.ndarray:
    """An Arrow boolean result (nulls as false) as a numpy bool array."""
    array = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
    if array.null_count:
        array = pc.fill_null(array, False)
    bits = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[array.offset: array.offset + n].astype(bool)


def _members(values: list[Any], kind: str) -> list[Any]:
    """The ``enum`` members a column of ``kind`` may equal, conservatively (a member of
    another Python type is left out: a value equal only to it is flagged, not passed)."""
    if kind == "string":
        return [v for v in values if isinstance(v, str)]
    if kind == "boolean":
        return [v for v in values if isinstance(v, bool)]
    if kind == "integer":
        return [v for v in values
                if isinstance(v, int) and not isinstance(v, bool) and abs(v) <= INT64_MAX]
    if kind == "number":
        return [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return []


def column_flags(column: pa.ChunkedArray, prop: dict[str, Any], formats: bool) -> np.ndarray:
    """Rows of ``column`` that may break ``prop`` (see the module's rule)."""
    n = len(column)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    kind = _json_kind(column.type)
    assert kind is not None
    values: Any = column
    if kind == "integer" and column.type != pa.int64():
        values = column.cast(pa.int64())
    elif kind == "number" and column.type != pa.float64():
        values = column.cast(pa.float64())
    null = _bool_array(column.is_null(), n)
    if kind == "number":  # NaN and infinities are null in JSON
        null |= ~_bool_array(pc.is_finite(values), n) & ~null
    value = ~null
    flags = np.zeros(n, dtype=bool)

    types = _types(prop)
    members: list[Any] | None = None
    if "enum" in prop:
        members = list(prop["enum"])
    if "const" in prop:
        members = [prop["const"]] if members is None else [
            m for m in members if m == prop["const"]]
    null_ok = (types is None or "null" in types) and (members is None or None in members)
    if not null_ok:
        flags |= null
    json_kind = "string" if kind in ("timestamp", "date") else kind
    if kind == "null":
        return flags
    if types is not None and not (
            json_kind in types or (json_kind == "integer" and "number" in types)):
        if json_kind == "number" and "integer" in types:
            integral = pc.and_(pc.equal(pc.floor(values), values),
                               pc.less_equal(pc.abs(values), float(EXACT_FLOAT)))
            flags |= value & ~_bool_array(integral, n)
        else:
            return flags | value
    if members is not None:
        allowed = _members(members, json_kind)
        if not allowed:
            return flags | value
        value_set = pa.array(allowed, type=values.type)
        flags |= value & ~_bool_array(pc.is_in(values, value_set=value_set), n)
    if json_kind in ("integer", "number"):
        flags |= value & _number_flags(values, prop, json_kind, n)
    if json_kind == "string" and kind == "string":
        flags |= value & _string_flags(values, prop, n)
    return flags


def _number_flags(values: Any, prop: dict[str, Any], kind: str, n: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    compare = {"minimum": pc.less, "maximum": pc.greater,
               "exclusiveMinimum": pc.less_equal, "exclusiveMaximum": pc.greater_equal}
    for key, breaks in compare.items():
        bound = prop.get(key)
        if bound is None or isinstance(bound, bool):
            continue
        if kind == "integer":
            # An integer against a fractional bound: the nearest integer bound that means
            # the same (v >= 0.5 <=> v >= 1); exact, and no int64 -> double rounding.
            if isinstance(bound, float):
                bound = math.ceil(bound) if key in ("minimum", "exclusiveMaximum") \
                    else math.floor(bound)
            if abs(bound) > INT64_MAX:
                return np.ones(n, dtype=bool)  # cannot compare exactly here: flag
            scalar = pa.scalar(int(bound), pa.int64())
        else:
            scalar = pa.scalar(float(bound), pa.float64())
        flags |= _bool_array(breaks(values, scalar), n)
    return flags


def _string_flags(values: Any, prop: dict[str, Any], n: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    if "minLength" in prop or "maxLength" in prop:
        length = pc.utf8_length(values)
        if "minLength" in prop:
            flags |= _bool_array(pc.less(length, prop["minLength"]), n)
        if "maxLength" in prop:
            flags |= _bool_array(pc.greater(length, prop["maxLength"]), n)
    if "pattern" in prop:
        matches = _bool_array(pc.match_substring_regex(values, pattern=prop["pattern"]), n)
        plain = _bool_array(pc.match_substring_regex(values, pattern=PRINTABLE_ASCII), n)
        flags |= ~(matches & plain)
    return flags


def screen_table(screen: Screen, table: pa.Table, formats: bool) -> np.ndarray:
    """Rows of ``table`` that may be invalid: the only ones jsonschema-rs will look at."""
    n = table.num_rows
    if screen.flag_all:
        return np.ones(n, dtype=bool)
    flags = np.zeros(n, dtype=bool)
    for name, prop in screen.vector.items():
        flags |= column_flags(table.column(name), prop, formats)
    if screen.residual:
        is_valid = screen.residual_validator.is_valid
        records = table_records(table.select(screen.residual))
        flags |= np.fromiter((not is_valid(r) for r in records), dtype=bool, count=n)
    return flags
