"""Record keys as 128-bit fingerprints, computed vectorised by DuckDB.

The fingerprint of a key is the md5 of the md5s of its columns' canonical text (a null is
``n``, which no md5 in hex can be), so a multi-column key is never confused with another
split differently. Canonical text: strings and binary as they are, temporal values as their
integer count (independent of the time zone), everything else DuckDB's ``CAST(x AS VARCHAR)``
(floats print their shortest round-trip form: ``-0.0`` and ``0.0`` differ, NaNs are equal).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headrace.errors import ExpressionError
from headrace.plugin import SqlEvaluator, quote_ident

FINGERPRINT = np.dtype("V16")
_SQL = SqlEvaluator("key fingerprint")


def check_key_columns(schema: pa.Schema, columns: list[str], what: str) -> None:
    """Raise ``ExpressionError`` for a key column that is missing or cannot be a key."""
    for name in columns:
        if name not in schema.names:
            raise ExpressionError(f"{what}: unknown column {name!r} (columns: "
                                  f"{', '.join(schema.names)})")
        kind = schema.field(name).type
        if pa.types.is_nested(kind):
            raise ExpressionError(f"{what}: column {name!r} is {kind}: a key must be a "
                                  "plain value (string, number, date, ...)")


def _canonical(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, bool]:
    """The column in a form whose text is canonical; whether it is text or bytes already."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_temporal(kind):
        return column.cast(pa.int64() if kind.bit_width == 64 else pa.int32()), False
    textual = (pa.types.is_string(kind) or pa.types.is_large_string(kind)
               or pa.types.is_binary(kind) or pa.types.is_large_binary(kind))
    return column, textual


def fingerprints(table: pa.Table, columns: list[str]) -> np.ndarray:
    """One 16-byte fingerprint (dtype ``V16``) per record of ``table`` by ``columns``."""
    if table.num_rows == 0:
        return np.empty(0, FINGERPRINT)
    arrays, parts = {}, []
    for index, name in enumerate(columns):
        column, textual = _canonical(table.column(name))
        alias = f"k{index}"
        arrays[alias] = column
        text = quote_ident(alias) if textual else f"CAST({quote_ident(alias)} AS VARCHAR)"
        parts.append(f"coalesce(md5({text}), 'n')")
    result = _SQL.select(pa.table(arrays), f"unhex(md5(concat({', '.join(parts)}))) AS h")
    digest = result.column(0).combine_chunks()
    offsets = np.frombuffer(digest.buffers()[1], dtype=np.int32)
    start, stop = offsets[digest.offset], offsets[digest.offset + len(digest)]
    data = np.frombuffer(digest.buffers()[2], dtype=np.uint8)[start:stop]
    return data.view(FINGERPRINT).copy()


def first_occurrences(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys (sorted) and the index where each first occurs."""
    distinct, first = np.unique(keys, return_index=True)
    return distinct, first
