"""Keyset pagination shared by the SQL sources.

Each page is ``SELECT * FROM (<query>) AS q WHERE key > $last ORDER BY key LIMIT n``: a
short statement of its own (no transaction or cursor stays open between batches), and the
same pages in every run. Records are numbered from the first row of the query (their row
ids), and the resume token after a batch holds its last key: a resumed run asks for the rows
after it. The key column must be unique and never NULL: rows that share a key with the last
row of a page would be skipped.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from headrace.errors import SourceError
from headrace.plugin import Batch, DeadRecord, Options, Position, Source, quote_ident

from ._types import decode_key, encode_key

TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$"
_START = object()  # no key yet: the first page


class KeysetOptions(Options):
    query: str | None = Field(default=None, description="A SELECT to read (no trailing ;).")
    table: str | None = Field(default=None, pattern=TABLE_NAME,
                              description="A table to read whole (name or schema.name).")
    key: str = Field(description="A unique, non-NULL column: pages are `WHERE key > last "
                     "ORDER BY key`, and a resume continues after the last committed key.")
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000, description="Rows per page.")
    fingerprint_query: str | None = Field(
        default=None, description="A query whose first row joins the input's fingerprint "
        "(e.g. `SELECT count(*), max(updated_at) FROM t`): --resume refuses when it changed.")

    @model_validator(mode="after")
    def _one_of(self) -> KeysetOptions:
        if (self.query is None) == (self.table is None):
            raise ValueError("give either query: or table:")
        if self.query is not None and not re.match(r"(?is)^\s*(select|with|values)\b",
                                                   self.query):
            raise ValueError("query: must be a SELECT (or WITH ... SELECT, VALUES)")
        return self


def quote_table(name: str) -> str:
    return ".".join(quote_ident(part) for part in name.split("."))


class KeysetSource(Source):
    """Pages of a query by a unique key; subclasses run the statements."""

    resumable = True
    options: KeysetOptions
    #: How a page's statement writes its parameters: ``?`` (sqlite3) or ``$1`` (Postgres).
    placeholders: tuple[str, str] = ("?", "?")

    def __init__(self, options: KeysetOptions, context: Any) -> None:
        super().__init__(options, context)
        self.base_sql = (options.query.strip().rstrip(";") if options.query is not None
                         else f"SELECT * FROM {quote_table(options.table or '')}")
        key = quote_ident(options.key)
        after, limit = self.placeholders
        self.first_page_sql = f"SELECT * FROM ({self.base_sql}) AS q ORDER BY {key} LIMIT {after}"
        self.next_page_sql = (f"SELECT * FROM ({self.base_sql}) AS q WHERE {key} > {after} "
                              f"ORDER BY {key} LIMIT {limit}")
        self._rows_read = 0
        self._last_key: Any = _START
        self._keys: dict[int, Any] = {}  # batch end (row count) -> its last key
        self._schema: pa.Schema | None = None

    # -- what subclasses provide ----------------------------------------------------------
    @abstractmethod
    def database(self) -> str:
        """The database, as messages and the fingerprint name it (no password)."""

    @abstractmethod
    async def fetch(self, after: Any, limit: int) -> tuple[list[str], Sequence[Sequence[Any]]]:
        """Column names and up to ``limit`` rows with a key above ``after`` (``_START``:
        from the first row), in key order."""

    @abstractmethod
    def schema_for(self, names: list[str], rows: Sequence[Sequence[Any]]) -> pa.Schema:
        """The Arrow schema of the run, decided from the first page."""

    def snapshot(self) -> list[Any] | None:
        """The first row of ``fingerprint_query`` (blocking; called once, before the run)."""
        return None

    # -- the Source contract --------------------------------------------------------------
    def describe(self) -> str:
        return f"{self.database()}: {self.options.table or 'query'}"

    def fingerprint(self) -> dict[str, Any] | None:
        printed: dict[str, Any] = {"database": self.database(), "query": self.base_sql,
                                   "key": self.options.key}
        if self.options.fingerprint_query:
            printed["snapshot"] = [str(v) for v in self.snapshot() or []]
        return printed

    def progress(self) -> int:
        return self._rows_read

    def resume_token(self, position: Position) -> dict[str, Any]:
        key = self._keys.get(position.end, _START)
        for end in [e for e in self._keys if e <= position.end]:
            del self._keys[end]  # checkpoints come in order: older ends are done with
        token: dict[str, Any] = {"offset": position.end, "row": position.next_row}
        if key is not _START:
            token["key"] = encode_key(key)
        if self._schema is not None:
            token["schema"] = self._schema.serialize().to_pybytes().hex()
        return token

    async def resume(self, token: dict[str, Any]) -> None:
        self._rows_read = int(token.get("offset", 0))
        if "key" in token:
            self._last_key = decode_key(token["key"])
        if "schema" in token:  # the types the first page of the interrupted run fixed
            self._schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(token["schema"])))

    async def batches(self) -> AsyncIterator[Batch]:
        size = self.options.batch_size
        while not self.context.stopping:
            names, rows = await self.fetch(self._last_key, size)
            if not rows:
                return
            if self._schema is None:
                if self.options.key not in names:
                    raise SourceError(f"source '{self.context.plugin_id}': the key column "
                                      f"{self.options.key!r} is not among the query's columns "
                                      f"({', '.join(names)})")
                self._schema = self.schema_for(names, rows)
            key_index = names.index(self.options.key)
            start = self._rows_read
            self._rows_read += len(rows)
            self._last_key = rows[-1][key_index]
            self._keys[self._rows_read] = self._last_key
            yield await anyio.to_thread.run_sync(self._batch, names, rows, start)
            if len(rows) < size:
                return

    # -- rows -> Arrow --------------------------------------------------------------------
    def _batch(self, names: list[str], rows: Sequence[Sequence[Any]], start: int) -> Batch:
        from ._types import arrow_column

        assert self._schema is not None
        position = Position(self.describe(), start, start + len(rows), unit="row",
                            next_row=start + len(rows))
        columns = list(zip(*rows, strict=True))
        try:
            arrays = [arrow_column(list(values), field.type)
                      for values, field in zip(columns, self._schema, strict=True)]
            table = pa.Table.from_arrays(arrays, schema=self._schema)
            ids = np.arange(start, start + len(rows), dtype=np.int64)
            return Batch.from_arrow(table, row_ids=ids, position=position)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return self._batch_row_by_row(names, rows, start, position)

    def _batch_row_by_row(self, names: list[str], rows: Sequence[Sequence[Any]], start: int,
                          position: Position) -> Batch:
        """Some value does not fit its column's type: those rows become dead letters."""
        from ._types import arrow_column

        assert self._schema is not None
        good: list[Sequence[Any]] = []
        ids: list[int] = []
        rejects: list[DeadRecord] = []
        for offset, row in enumerate(rows):
            for value, field in zip(row, self._schema, strict=True):
                try:
                    arrow_column([value], field.type)
                except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                    record = {n: v.hex() if isinstance(v, bytes) else v
                              if isinstance(v, int | float | str | bool) or v is None
                              else str(v) for n, v in zip(names, row, strict=True)}
                    rejects.append(DeadRecord(
                        record, "TypeError", f"column {field.name!r}: {value!r} does not fit "
                        f"{field.type}: {exc}", start + offset))
                    break
            else:
                good.append(row)
                ids.append(start + offset)
        columns: list[Sequence[Any]] = (list(zip(*good, strict=True)) if good
                                        else [() for _ in self._schema])
        arrays = [arrow_column(list(values), field.type)
                  for values, field in zip(columns, self._schema, strict=True)]
        batch = Batch.from_arrow(pa.Table.from_arrays(arrays, schema=self._schema),
                                 row_ids=np.array(ids, dtype=np.int64), position=position)
        batch.rejects = rejects
        return batch
