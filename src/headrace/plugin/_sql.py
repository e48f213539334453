"""SQL expressions over Arrow batches, evaluated vectorised by DuckDB.

Connections are in-memory DuckDB databases with external access disabled, so an expression
can read nothing but the batch. Opening one costs ~30 ms, so each evaluator keeps a small pool
and reuses them whichever worker thread calls. Errors are sorted at this boundary: data errors
(a value that does not convert) become ``DataError`` so the engine can isolate the record;
everything else (syntax, unknown column) is an ``ExpressionError``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pyarrow as pa

from headrace.errors import ExpressionError

from ._contracts import DataError

SQL_TABLE = "batch"  # the name a batch has in SQL
TABLE = SQL_TABLE


class _ConnectionPool:
    """In-memory DuckDB connections shared by every step of the process; each is used by one
    thread at a time, so there are only as many as queries running at once."""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._lock:
            con = self._idle.pop() if self._idle else None
        if con is None:
            import duckdb

            con = duckdb.connect(":memory:", config={
                "enable_external_access": False,
                "autoload_known_extensions": False,
                "threads": 1,
            })
        try:
            yield con
        finally:
            with self._lock:
                self._idle.append(con)


_POOL = _ConnectionPool()


def sql_connection() -> AbstractContextManager[Any]:
    """One of the process's in-memory DuckDB connections (no file or network access), for
    parsing and checking SQL; give it back by leaving the ``with`` block."""
    return _POOL.connection()


class SqlEvaluator:
    """Evaluates ``SELECT <exprs> FROM batch`` for one step; safe to call from many threads."""

    def __init__(self, label: str) -> None:
        self.label = label

    def select(self, table: pa.Table, select_list: str, where: str | None = None) -> pa.Table:
        """``SELECT select_list FROM batch [WHERE where]`` over ``table``."""
        return self.query(table, f"SELECT {select_list} FROM {TABLE}"
                          + (f" WHERE {where}" if where else ""))

    def query(self, table: pa.Table, sql: str) -> pa.Table:
        """A whole query over ``table`` registered as ``batch``. A value that does not
        convert raises ``DataError`` (the engine isolates the records); any other problem
        with the query ``ExpressionError``."""
        import duckdb

        with _POOL.connection() as con:
            con.register(TABLE, table)
            try:
                return con.sql(sql).to_arrow_table()
            except (duckdb.DataError, duckdb.InvalidInputException) as exc:
                raise DataError(_first_line(exc)) from exc
            except duckdb.Error as exc:
                label = f"{self.label}: " if self.label else ""
                raise ExpressionError(f"{label}{_first_line(exc)}") from exc
            finally:
                con.unregister(TABLE)


def check_syntax(expression: str, label: str) -> None:
    """Parse ``expression`` as one SQL expression; raise ``ExpressionError`` if it is not one."""
    import duckdb

    try:
        with _POOL.connection() as con:
            statements = con.extract_statements(f"SELECT ({expression}) FROM {TABLE}")
    except duckdb.Error as exc:
        raise ExpressionError(f"{label}: {expression!r}: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise ExpressionError(f"{label}: {expression!r} is not a single expression")


_TOKENS = re.compile(r"""'(?:[^']|'')*'|"((?:[^"]|"")*)"|([A-Za-z_][A-Za-z0-9_$]*)""")
_STAR = re.compile(r"columns\s*\(|\.\s*\*|\(\s*\*\s*\)|^\s*\*|,\s*\*", re.IGNORECASE)


def referenced_columns(expression: str, names: list[str]) -> frozenset[str] | None:
    """The columns of ``names`` that ``expression`` may read; None if it may read any.

    Over-approximates (a word that names a column counts even inside a function name), which
    is safe: it only decides which columns a source may skip.
    """
    if _STAR.search(expression):
        return None
    by_lower = {n.lower(): n for n in names}
    found: set[str] = set()
    for match in _TOKENS.finditer(expression):
        quoted, bare = match.group(1), match.group(2)
        if quoted is not None:
            name = quoted.replace('""', '"')
            if name in names:
                found.add(name)
            elif name.lower() in by_lower:
                found.add(by_lower[name.lower()])
        elif bare is not None and bare.lower() in by_lower:
            found.add(by_lower[bare.lower()])
    return frozenset(found)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
