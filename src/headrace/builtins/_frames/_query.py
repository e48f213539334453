"""A whole SELECT over one batch, on the expression engine's DuckDB connections.

Those connections are in-memory with external access disabled; on top of that a query is
checked before it runs: one SELECT statement, reading no table but ``batch`` (and its own
CTEs) and calling no table function (``read_csv``, ``glob``, ...). DuckDB's parser decides
what the query is (``json_serialize_sql``), not a regular expression.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from headrace.errors import ExpressionError
from headrace.plugin import SQL_TABLE as TABLE
from headrace.plugin import SqlEvaluator, sql_connection


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_query(query: str) -> None:
    """Raise ``ExpressionError`` unless ``query`` is one SELECT reading only ``batch``."""
    import duckdb

    with sql_connection() as con:
        try:
            statements = con.extract_statements(query)
        except duckdb.Error as exc:
            raise ExpressionError(_first_line(exc)) from None
        if len(statements) != 1:
            raise ExpressionError(f"one SELECT statement expected, found {len(statements)}")
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise ExpressionError(f"only SELECT is allowed, not {kind.name}")
        rows = con.execute("SELECT json_serialize_sql(?)", [query]).fetchall()
    tree = json.loads(rows[0][0]) if rows else {"error": True}
    if tree.get("error"):
        raise ExpressionError(f"only a plain SELECT is allowed: "
                              f"{tree.get('error_message', 'it does not serialize')}")
    ctes = {name.lower() for name in _cte_names(tree)}
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = node.get("function", {}).get("function_name", "?")
            raise ExpressionError(f"a sql step reads only the batch: table function "
                                  f"{name}() is not allowed")
        if kind == "BASE_TABLE":
            name = node.get("table_name", "")
            qualified = node.get("schema_name") or node.get("catalog_name")
            if qualified or (name.lower() != TABLE and name.lower() not in ctes):
                raise ExpressionError(f"a sql step reads only the table {TABLE!r}, "
                                      f"not {name!r}")


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _cte_names(tree: Any) -> Iterator[str]:
    for node in _nodes(tree):
        entries = node.get("cte_map", {}).get("map", []) if "cte_map" in node else []
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                yield entry["key"]


def run_query(table: pa.Table, query: str) -> pa.Table:
    """``query`` over ``table`` registered as ``batch``. A value that does not convert (a
    failing cast) raises ``DataError``; anything else about the query ``ExpressionError``."""
    return _EVALUATOR.query(table, query)


_EVALUATOR = SqlEvaluator("")  # the step names itself in its messages
