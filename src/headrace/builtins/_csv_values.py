"""Bad CSV values found column-wise (decision 0016): a block whose typed parse failed is
read again with every column as text, each typed column is cast by pyarrow, and only the
columns whose cast fails are screened with one DuckDB ``TRY_CAST`` query for the rows at
fault; only those lines are dead letters. Splitting the block line by line
(``LineSource._isolate``) cost milliseconds a bad line; this costs a few parses a block.

``TRY_CAST`` is a screen, not the judge: the caller casts the remaining rows with pyarrow,
and if that still fails (a value DuckDB accepts and pyarrow does not, such as ``1.5`` for an
integer) it falls back to line-by-line isolation. So the dead letters are exactly the ones
line-by-line isolation finds.
"""

from __future__ import annotations

import pyarrow as pa

from headrace.plugin import quote_ident, sql_connection

_SIMPLE = {
    pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT", pa.uint16(): "USMALLINT", pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN", pa.date32(): "DATE",
}


def sql_type(arrow: pa.DataType) -> str | None:
    """DuckDB's type for a CSV column type, None when there is no plain twin."""
    if arrow in _SIMPLE:
        return _SIMPLE[arrow]
    if pa.types.is_timestamp(arrow) and arrow.tz is None:
        return "TIMESTAMP"
    return None


def text_type(arrow: pa.DataType) -> bool:
    return pa.types.is_string(arrow) or pa.types.is_large_string(arrow)


def bad_values(texts: pa.Table, types: dict[str, pa.DataType]
               ) -> tuple[dict[int, tuple[str, str]], dict[str, pa.ChunkedArray]] | None:
    """Row -> (column, value) of the first value in each row that does not convert to its
    column's type, and the columns that converted whole (cast already); None when a
    failing column's type has no DuckDB twin. Only columns whose cast fails are screened."""
    converted: dict[str, pa.ChunkedArray] = {}
    checks: list[tuple[str, str]] = []
    for name in texts.column_names:
        target = types.get(name)
        if target is None or text_type(target):
            continue
        try:
            converted[name] = texts.column(name).cast(target)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        duck = sql_type(target)
        if duck is None:
            return None
        checks.append((name, duck))
    bad: dict[int, tuple[str, str]] = {}
    if not checks:
        return bad, converted
    flags = ", ".join(f"({quote_ident(n)} IS NOT NULL AND TRY_CAST({quote_ident(n)} AS {t}) "
                      f"IS NULL) AS b{i}" for i, (n, t) in enumerate(checks))
    subset = texts.select([n for n, _ in checks])
    with sql_connection() as con:
        con.register("texts", subset)
        try:
            found = con.sql(f"SELECT {flags} FROM texts").to_arrow_table()
        finally:
            con.unregister("texts")
    for i, (name, _) in enumerate(checks):  # in file order, as the columns were checked
        column = found.column(f"b{i}").to_numpy(zero_copy_only=False)
        rows = column.nonzero()[0]
        if not len(rows):
            continue
        values = texts.column(name).take(pa.array(rows)).to_pylist()
        for row, value in zip(rows.tolist(), values, strict=True):
            bad.setdefault(row, (name, value))  # columns in file order: the first bad wins
    return bad, converted
