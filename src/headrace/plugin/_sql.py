"""SQL expressions over Arrow batches, evaluated vectorised by DuckDB.

Each thread gets its own in-memory DuckDB connection with external access disabled, so an
expression can read nothing but the batch. Errors are sorted at this boundary: data errors
(a value that does not convert) become ``DataError`` so the engine can isolate the record;
everything else (syntax, unknown column) is an ``ExpressionError``.
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from headrace.errors import ExpressionError

from ._contracts import DataError

TABLE = "batch"


def _connect() -> Any:
    import duckdb

    return duckdb.connect(
        ":memory:",
        config={"enable_external_access": False, "autoload_known_extensions": False},
    )


class SqlEvaluator:
    """Evaluates ``SELECT <exprs> FROM batch`` for one step; safe to call from many threads."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._local = threading.local()

    def _con(self) -> Any:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = _connect()
        return con

    def select(self, table: pa.Table, select_list: str, where: str | None = None) -> pa.Table:
        """``SELECT select_list FROM batch [WHERE where]`` over ``table``."""
        import duckdb

        sql = f"SELECT {select_list} FROM {TABLE}" + (f" WHERE {where}" if where else "")
        con = self._con()
        con.register(TABLE, table)
        try:
            return con.sql(sql).to_arrow_table()
        except (duckdb.DataError, duckdb.InvalidInputException) as exc:
            raise DataError(_first_line(exc)) from exc
        except duckdb.Error as exc:
            raise ExpressionError(f"{self.label}: {_first_line(exc)}") from exc
        finally:
            con.unregister(TABLE)


def check_syntax(expression: str, label: str) -> None:
    """Parse ``expression`` as one SQL expression; raise ``ExpressionError`` if it is not one."""
    import duckdb

    try:
        statements = duckdb.extract_statements(f"SELECT ({expression}) FROM {TABLE}")
    except duckdb.Error as exc:
        raise ExpressionError(f"{label}: {expression!r}: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise ExpressionError(f"{label}: {expression!r} is not a single expression")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
