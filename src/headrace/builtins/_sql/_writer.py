"""Rows into a Postgres table: the statements, and the isolation of bad records.

``insert`` and ``upsert`` send a chunk of ``batch_size`` rows as one statement with one
array parameter per column (``INSERT ... SELECT * FROM unnest($1::bigint[], ...)``,
``ON CONFLICT (key) DO UPDATE`` for upsert); ``copy`` uses asyncpg's binary
``copy_records_to_table``. Each chunk runs under a savepoint: when the database refuses it
for a reason of its records (a unique or check violation, a value it cannot take), the chunk
is rolled back to the savepoint and split in halves until the records at fault are alone;
those come back as dead letters (``duplicate key (id)=(42)``) and the rest is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from headrace.errors import SinkError
from headrace.plugin import quote_ident

from ._driver import asyncpg_module, describe_error
from ._keyset import quote_table
from ._types import pg_type_of_arrow, pg_value_converter

asyncpg = asyncpg_module()
#: Refusals that concern the records, not the database: split the chunk to find them.
RECORD_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.IntegrityConstraintViolationError,  # 23: unique, not null, check, fk
    asyncpg.exceptions.DataError,  # 22: out of range, invalid text for a type
    asyncpg.exceptions.CardinalityViolationError,  # 21: one upsert touching a key twice
    asyncpg.exceptions._base.DataError,  # a value asyncpg cannot encode for the column
)
_KEY_DETAIL = re.compile(r"Key (\(.*\))=(\(.*\)) already exists")


@dataclass
class Refused:
    """A record the database refused: its index in the batch and why."""

    index: int
    error: str
    message: str


def refusal_message(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None) or ""
    match = _KEY_DETAIL.search(detail)
    if match:
        return f"duplicate key {match[1]}={match[2]}"
    return describe_error(exc).split(": ", 1)[1]


@dataclass
class Statement:
    names: list[str]
    sql: str  # insert/upsert over unnest arrays, or VALUES for executemany
    converters: list[Callable[[Any], Any] | None]
    columnar: bool  # unnest (one call per chunk) rather than executemany


class TableWriter:
    """Writes Arrow tables into one Postgres table on the connection it is given."""

    def __init__(self, table: str, mode: str, key: list[str], chunk: int, create: bool) -> None:
        self.table_name = table
        self.target = quote_table(table)
        self.mode = mode
        self.key = key
        self.chunk = chunk
        self.create = create
        self.columns: dict[str, str] | None = None  # name -> format_type
        self._statements: dict[tuple[str, ...], Statement] = {}

    async def prepare(self, conn: Any, schema: pa.Schema) -> None:
        """Create the table if asked to (its own transaction, under an advisory lock: two
        runs may start at once) and read its column types. Before the data transaction."""
        if self.create and self.columns is None:
            columns = [f"{quote_ident(f.name)} {pg_type_of_arrow(f.type)}" for f in schema]
            if self.key:
                columns.append(f"PRIMARY KEY ({', '.join(map(quote_ident, self.key))})")
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                   f"headrace:{self.table_name}")
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {self.target} "
                                   f"({', '.join(columns)})")
        if self.columns is None:
            rows = await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
                "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum", self.target)
            if not rows:
                raise SinkError(f"table {self.table_name} does not exist",
                                hint="create it, or set create: true")
            self.columns = {r["attname"]: r["type"] for r in rows}

    def statement(self, names: list[str]) -> Statement:
        found = self._statements.get(tuple(names))
        if found is not None:
            return found
        assert self.columns is not None, "prepare() first"
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            raise SinkError(f"table {self.table_name} has no column {unknown[0]!r} (it has "
                            f"{', '.join(self.columns)})")
        missing = [k for k in self.key if k not in names]
        if missing:
            raise SinkError(f"key column {missing[0]!r} is not among the records' columns "
                            f"({', '.join(names)})")
        types = [self.columns[n] for n in names]
        quoted = ", ".join(map(quote_ident, names))
        columnar = not any(t.endswith("]") for t in types)  # unnest flattens nested arrays
        if columnar:
            arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
            sql = f"INSERT INTO {self.target} ({quoted}) SELECT * FROM unnest({arrays})"
        else:
            marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
            sql = f"INSERT INTO {self.target} ({quoted}) VALUES ({marks})"
        if self.mode == "upsert":
            keys = ", ".join(map(quote_ident, self.key))
            updates = ", ".join(f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}"
                                for n in names if n not in self.key)
            sql += f" ON CONFLICT ({keys}) DO " + (f"UPDATE SET {updates}" if updates
                                                   else "NOTHING")
        made = Statement(names, sql, [pg_value_converter(t) for t in types], columnar)
        self._statements[tuple(names)] = made
        return made

    def values(self, table: pa.Table, statement: Statement) -> list[list[Any]]:
        """Columns as Python lists asyncpg binds to the table's types (blocking: a thread)."""
        columns = []
        for column, convert in zip(table.columns, statement.converters, strict=True):
            values = column.to_pylist()
            columns.append(values if convert is None else [convert(v) for v in values])
        return columns

    async def write(self, conn: Any, columns: list[list[Any]], statement: Statement
                    ) -> list[Refused]:
        """Write the rows (in the open transaction); the refused ones come back."""
        count = len(columns[0]) if columns else 0
        refused: list[Refused] = []
        for start in range(0, count, self.chunk):
            indices = list(range(start, min(count, start + self.chunk)))
            refused += await self._isolating(conn, columns, statement, indices,
                                             copy=self.mode == "copy")
        return refused

    async def _isolating(self, conn: Any, columns: list[list[Any]], statement: Statement,
                         indices: list[int], *, copy: bool) -> list[Refused]:
        try:
            async with conn.transaction():  # a savepoint inside the open transaction
                await self._execute(conn, columns, statement, indices, copy)
            return []
        except RECORD_ERRORS as exc:
            if len(indices) == 1:
                return [Refused(indices[0], type(exc).__name__, refusal_message(exc))]
        # Split: COPY cannot say which row failed, so the halves are inserted.
        middle = len(indices) // 2
        return (await self._isolating(conn, columns, statement, indices[:middle], copy=False)
                + await self._isolating(conn, columns, statement, indices[middle:],
                                        copy=False))

    async def _execute(self, conn: Any, columns: list[list[Any]], statement: Statement,
                       indices: list[int], copy: bool) -> None:
        whole = len(indices) == len(columns[0])
        part = columns if whole else [[c[i] for i in indices] for c in columns]
        if copy:
            schema, _, name = self.table_name.rpartition(".")
            await conn.copy_records_to_table(name, records=list(zip(*part, strict=True)),
                                             columns=statement.names,
                                             schema_name=schema or None)
        elif statement.columnar:
            await conn.execute(statement.sql, *part)
        else:
            await conn.executemany(statement.sql, list(zip(*part, strict=True)))
