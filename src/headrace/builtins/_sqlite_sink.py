"""The ``sqlite`` sink: records into a table of an SQLite database (stdlib ``sqlite3``).

Writes go into one open transaction; a checkpoint COMMITs it (WAL, ``synchronous=FULL``: a
committed checkpoint survives power loss) and notes the table's largest rowid. A run without
checkpoints commits once, in ``finish``, so its rows appear all together or not at all.

Why the rowid cut on resume is exact (insert mode): a crash between this sink's COMMIT and
the ledger's leaves rows the resumed run will write again. SQLite gives a new row the rowid
``max(rowid) + 1``, so in a table only this sink appends to, rowids grow in write order and
the rows written after the checkpoint are exactly those with a rowid above the one it noted.
Upsert mode needs no cut: replaying the same records in the same order ends in the same rows.

A fresh run (not ``--resume``) first empties the table in insert mode, as file sinks replace
their file (``if_exists: append`` keeps the rows); in upsert mode it merges into what is there
(``if_exists: replace`` empties it first). The emptying is part of the first transaction, so
the old rows stay until the run commits its first rows. An appending checkpointed run keeps
the rowid it started from in a small ``_headrace_sink`` table until it finishes: a crash
before its first checkpoint reached the ledger would otherwise leave rows no state names.

sqlite3 connections are not thread-safe: every call runs in a worker thread under one lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import anyio
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from headrace.errors import SinkError
from headrace.plugin import Batch, Options, Sink, quote_ident

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
SIDE_TABLE = "_headrace_sink"  # (table, the rowid an unfinished appending run started after)


class SqliteOptions(Options):
    path: str = Field(description="Database file, relative to the pipeline file.")
    table: str = Field(pattern=IDENTIFIER, description="Table to write (letters, digits, _).")
    mode: Literal["insert", "upsert"] = Field(
        default="insert", description="insert, or upsert: INSERT ... ON CONFLICT(key) DO UPDATE."
    )
    key: list[str] = Field(default_factory=list, description="Columns that identify a row "
                           "(upsert only); create: true makes a unique index on them.")
    create: bool = Field(default=True, description="CREATE TABLE IF NOT EXISTS from the first "
                         "batch's columns.")
    if_exists: Literal["replace", "append"] | None = Field(
        default=None, description="Rows already in the table on a fresh run: replace (insert "
        "mode's default) or append (upsert mode's default: merge)."
    )

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        if value.lower().startswith("sqlite_") or value == SIDE_TABLE:
            raise ValueError(f"{value} is reserved (sqlite_* and {SIDE_TABLE})")
        return value

    @model_validator(mode="after")
    def _check_key(self) -> SqliteOptions:
        if self.mode == "upsert" and not self.key:
            raise ValueError("mode: upsert needs key: [columns]")
        if self.mode == "insert" and self.key:
            raise ValueError("key applies to mode: upsert only")
        return self


def sqlite_type(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return "INTEGER"
    if pa.types.is_floating(kind):
        return "REAL"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "BLOB"
    if pa.types.is_null(kind):
        return ""  # no affinity: values are kept as given
    return "TEXT"  # strings; timestamps and dates as ISO 8601; decimals; nested as JSON


def column_values(column: pa.ChunkedArray) -> list[Any]:
    """Python values sqlite3 binds as they are: ints, floats, str, bytes, None."""
    kind, values = column.type, column.to_pylist()
    if pa.types.is_temporal(kind):
        return [v if v is None else v.isoformat() if hasattr(v, "isoformat") else str(v)
                for v in values]
    if pa.types.is_decimal(kind):
        return [v if v is None else str(v) for v in values]
    if pa.types.is_nested(kind):
        return [v if v is None else json.dumps(v, default=str) for v in values]
    return values


class SqliteSink(Sink):
    """Rows into an SQLite table; one transaction per checkpoint."""

    summary = "SQLite table (insert or upsert), one transaction per checkpoint"
    example = {"path": "out/records.db", "table": "records", "mode": "upsert", "key": ["id"]}
    Options: ClassVar[type[SqliteOptions]] = SqliteOptions
    options: SqliteOptions
    resumable = True
    idempotent = True  # upsert by key, or a resume deletes rows after the checkpoint's rowid

    def __init__(self, options: SqliteOptions, context: Any) -> None:
        super().__init__(options, context)
        self.path = context.resolve_path(options.path)
        self.table = quote_ident(options.table)
        default = "replace" if options.mode == "insert" else "append"
        self.replace = (options.if_exists or default) == "replace"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._statements: dict[tuple[str, ...], str] = {}

    def describe(self) -> str:
        return f"{self.path}:{self.options.table}"

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return function(*args)

        try:
            return await anyio.to_thread.run_sync(locked)
        except (sqlite3.Error, OSError, OverflowError) as exc:
            raise SinkError(f"sink '{self.context.plugin_id}': {self.describe()}: {exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise SinkError(f"sink '{self.context.plugin_id}' is not open")
        return self._db

    def _transaction(self) -> sqlite3.Connection:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def _exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                               (name,)).fetchone() is not None

    def _max_rowid(self) -> int:
        if not self._exists(self.options.table):
            return 0
        return int(self.db.execute(f"SELECT max(rowid) FROM {self.table}").fetchone()[0] or 0)

    # -- lifecycle ----------------------------------------------------------------------
    def _open_blocking(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        if not self.checkpointing:
            self._start_fresh()

    async def open(self) -> None:
        await self._call(self._open_blocking)

    @property
    def _tracks_rowid(self) -> bool:
        return self.checkpointing and self.options.mode == "insert"

    @property
    def _tracks_start(self) -> bool:
        return self.checkpointing and self.options.mode == "insert" and not self.replace

    def _start_fresh(self) -> None:
        exists = self._exists(self.options.table)
        if self.replace and exists:
            self._transaction().execute(f"DELETE FROM {self.table}")
        elif self._tracks_start:
            db = self._transaction()
            db.execute(f"CREATE TABLE IF NOT EXISTS {SIDE_TABLE} "
                       "(tbl TEXT PRIMARY KEY, start_rowid INTEGER NOT NULL)")
            row = db.execute(f"SELECT start_rowid FROM {SIDE_TABLE} WHERE tbl = ?",
                             (self.options.table,)).fetchone()
            if row is not None and exists:  # a run that never finished: start over
                db.execute(f"DELETE FROM {self.table} WHERE rowid > ?", row)
            db.execute(f"INSERT OR REPLACE INTO {SIDE_TABLE} VALUES (?, ?)",
                       (self.options.table, self._max_rowid()))

    def _resume_blocking(self, state: dict[str, Any]) -> None:
        if not state:
            self._start_fresh()
        elif self.options.mode == "insert":
            rowid = int(state["rowid"])
            if not self._exists(self.options.table):
                if rowid == 0:  # the checkpoint came before the first row: nothing to cut
                    return
                raise SinkError(f"cannot resume: table {self.options.table} is gone from "
                                f"{self.path}", hint="run without --resume to start over")
            self._transaction().execute(f"DELETE FROM {self.table} WHERE rowid > ?", (rowid,))

    async def resume(self, state: dict[str, Any]) -> None:
        await self._call(self._resume_blocking, state)

    def _check_rowid_order(self) -> None:
        """The resume cut needs rowids in write order: not so when the records give the
        rowid (a column declared ``INTEGER PRIMARY KEY`` that the input has)."""
        columns = self.db.execute(f"PRAGMA table_info({self.table})").fetchall()
        keys = [c for c in columns if c[5]]
        written = {name for names in self._statements for name in names}
        if len(keys) == 1 and str(keys[0][2]).upper() == "INTEGER" and keys[0][1] in written:
            name = keys[0][1]
            raise SinkError(
                f"{self.describe()}: column {name!r} is the table's INTEGER PRIMARY KEY, so "
                "row ids follow the data, not the order rows were written: insert mode "
                "cannot cut a resumed run back to its checkpoint",
                hint=f"use mode: upsert with key: [{name}] (a replay rewrites the same rows)")

    def _checkpoint_blocking(self) -> dict[str, Any]:
        if self._tracks_rowid and self._exists(self.options.table):
            self._check_rowid_order()
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        return {"rowid": self._max_rowid()}

    async def checkpoint(self) -> dict[str, Any]:
        return await self._call(self._checkpoint_blocking)

    def _finish_blocking(self) -> None:
        if self._tracks_start:
            db = self._transaction()
            db.execute(f"DELETE FROM {SIDE_TABLE} WHERE tbl = ?", (self.options.table,))
            if db.execute(f"SELECT count(*) FROM {SIDE_TABLE}").fetchone()[0] == 0:
                db.execute(f"DROP TABLE {SIDE_TABLE}")
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    async def finish(self) -> None:
        await self._call(self._finish_blocking)

    def _rollback(self) -> None:
        if self._db is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")  # committed checkpoints stay

    async def abort(self) -> None:
        await self._call(self._rollback)

    def _close_blocking(self) -> None:
        if self._db is not None:
            try:
                self._rollback()
            finally:
                self._db.close()
                self._db = None

    async def close(self) -> None:
        await self._call(self._close_blocking)

    # -- writing ------------------------------------------------------------------------
    def _statement(self, table: pa.Table) -> str:
        names = tuple(table.schema.names)
        if names in self._statements:
            return self._statements[names]
        missing = [k for k in self.options.key if k not in names]
        if missing:
            raise SinkError(f"{self.describe()}: key column {missing[0]!r} is not among the "
                            f"columns ({', '.join(names)})")
        if self.options.create:
            columns = ", ".join(f"{quote_ident(f.name)} {sqlite_type(f.type)}".rstrip()
                                for f in table.schema)
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})")
            if self.options.key:
                index = quote_ident(f"{self.options.table}_key")
                keys = ", ".join(map(quote_ident, self.options.key))
                self.db.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} "
                                f"ON {self.table} ({keys})")
        sql = (f"INSERT INTO {self.table} ({', '.join(map(quote_ident, names))}) "
               f"VALUES ({', '.join('?' * len(names))})")
        if self.options.mode == "upsert":
            keys = ", ".join(map(quote_ident, self.options.key))
            updates = ", ".join(f"{quote_ident(n)} = excluded.{quote_ident(n)}"
                                for n in names if n not in self.options.key)
            sql += f" ON CONFLICT ({keys}) DO " + (f"UPDATE SET {updates}" if updates
                                                   else "NOTHING")
        self._statements[names] = sql
        return sql

    def _write_blocking(self, table: pa.Table) -> None:
        if table.num_columns == 0:
            return
        db = self._transaction()
        sql = self._statement(table)
        if table.num_rows:
            db.executemany(sql, zip(*(column_values(c) for c in table.columns), strict=True))

    async def write(self, batch: Batch) -> None:
        await self._call(self._write_blocking, batch.to_arrow())
