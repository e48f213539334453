"""The ``sqlite`` source: a table or a SELECT of an SQLite database, page by page.

sqlite3 runs in worker threads (one statement per page, under a lock: a connection is not
thread-safe). SQLite columns have no fixed types, so the run's Arrow types come from the
first page: a column's declared type when it is a table column of a clear affinity, else the
type of its values in the first page (integers int64, reals float64, text string, blobs
binary; integers and reals float64; anything mixed with text, or all NULL: string). The
types travel in the resume token; a later value that does not fit its column (text in an
integer column) is a dead letter naming the column.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import anyio
import pyarrow as pa
from pydantic import Field

from headrace.errors import SourceError

from ._keyset import _START, KeysetOptions, KeysetSource


class SqliteSourceOptions(KeysetOptions):
    path: str = Field(description="Database file, relative to the pipeline file.")


def _declared(decl: str) -> pa.DataType | None:
    """SQLite's affinity rules, for declared column types that say enough."""
    upper = decl.upper()
    if "INT" in upper:
        return pa.int64()
    if any(part in upper for part in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if any(part in upper for part in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    if upper == "BLOB":
        return pa.binary()
    if "BOOL" in upper:
        return pa.bool_()
    return None  # NUMERIC, DATE, no type: decided by the values


def _inferred(values: list[Any]) -> pa.DataType:
    kinds = {type(v) for v in values if v is not None}
    if kinds == {int}:
        return pa.int64()
    if kinds <= {int, float} and kinds:
        return pa.float64()
    if kinds == {bytes}:
        return pa.binary()
    return pa.string()


class SqliteSource(KeysetSource):
    """Rows of an SQLite table or query, paged by a unique key."""

    summary = "SQLite table or SELECT, paged by a unique key (resumable)"
    example: ClassVar[dict[str, Any]] = {"path": "data/shop.db", "table": "orders",
                                         "key": "id"}
    Options: ClassVar[type[SqliteSourceOptions]] = SqliteSourceOptions
    options: SqliteSourceOptions
    placeholders = ("?", "?")

    def __init__(self, options: SqliteSourceOptions, context: Any) -> None:
        super().__init__(options, context)
        self.path = context.resolve_path(options.path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def database(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such database file")
        # Read-only: a source never writes, and a missing file is not created.
        return sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True,
                               check_same_thread=False)

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return function(*args)

        try:
            return await anyio.to_thread.run_sync(locked)
        except sqlite3.Error as exc:
            raise SourceError(f"source '{self.context.plugin_id}': {self.path}: {exc}") from exc

    async def open(self) -> None:
        self._db = await self._call(self._connect)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self._call(db.close)

    def snapshot(self) -> list[Any] | None:
        query = self.options.fingerprint_query
        if not query or not self.path.exists():
            return None
        db = self._connect()
        try:
            row = db.execute(query).fetchone()
        except sqlite3.Error as exc:
            raise SourceError(f"source '{self.context.plugin_id}': fingerprint_query: {exc}"
                              ) from exc
        finally:
            db.close()
        return list(row) if row is not None else []

    def _fetch_blocking(self, after: Any, limit: int) -> tuple[list[str], list[Any]]:
        assert self._db is not None, "fetch before open"
        if after is _START:
            cursor = self._db.execute(self.first_page_sql, (limit,))
        else:
            cursor = self._db.execute(self.next_page_sql, (after, limit))
        rows = cursor.fetchall()
        return [d[0] for d in cursor.description], rows

    async def fetch(self, after: Any, limit: int) -> tuple[list[str], Sequence[Sequence[Any]]]:
        names, rows = await self._call(self._fetch_blocking, after, limit)
        return names, rows

    def _declared_types(self) -> dict[str, pa.DataType]:
        if self.options.table is None or self._db is None:
            return {}
        schema, _, name = self.options.table.rpartition(".")
        pragma = f"PRAGMA {schema + '.' if schema else ''}table_info({name!r})"
        with self._lock:
            info = self._db.execute(pragma).fetchall()
        return {row[1]: kind for row in info if (kind := _declared(row[2] or "")) is not None}

    def schema_for(self, names: list[str], rows: Sequence[Sequence[Any]]) -> pa.Schema:
        declared = self._declared_types()
        columns = list(zip(*rows, strict=True))
        return pa.schema([(name, declared.get(name) or _inferred(list(values)))
                          for name, values in zip(names, columns, strict=True)])
