"""The ``postgres`` source: a table or a SELECT, page by page over one asyncpg connection.

Each page is a statement of its own (prepared once), so no transaction stays open between
batches and a dropped connection costs one page: the source reconnects and asks for the
same page again, under the source's ``retry``/``timeout``/``breaker`` (it applies the
policy itself). Column types come from the statement (see ``_types`` for the mapping).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from headrace.config import Duration, redact
from headrace.errors import SourceError
from headrace.plugin import RetriesExhausted

from ._driver import (
    CONNECT_HINT,
    asyncpg_module,
    connect_with_policy,
    describe_error,
    protect_dsn,
    transient_errors,
)
from ._keyset import _START, KeysetOptions, KeysetSource
from ._types import arrow_type_of_pg, numeric_type

asyncpg = asyncpg_module()


class PostgresSourceOptions(KeysetOptions):
    dsn: str = Field(description="postgresql://user:password@host:port/database (the "
                     "password is hidden in every message).")
    numeric: str = Field(default="float", description="What numeric columns become: float "
                         "(float64), string (exact text) or decimal(P,S).")
    connect_timeout: Duration = Field(default=10.0, gt=0, le=600,
                                   description="Seconds to connect.")
    ssl: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        default=None, description="TLS mode (default: as the DSN says).")

    @field_validator("numeric")
    @classmethod
    def _check_numeric(cls, value: str) -> str:
        numeric_type(value)
        return value


class PostgresSource(KeysetSource):
    """Rows of a Postgres table or query, paged by a unique key."""

    summary = "PostgreSQL table or SELECT, paged by a unique key (resumable; asyncpg)"
    example: ClassVar[dict[str, Any]] = {"dsn": "postgresql://app@localhost/shop",
                                         "table": "orders", "key": "id"}
    Options: ClassVar[type[PostgresSourceOptions]] = PostgresSourceOptions
    options: PostgresSourceOptions
    placeholders = ("$1", "$2")
    applies_policy = True
    transient_errors = transient_errors()

    def __init__(self, options: PostgresSourceOptions, context: Any) -> None:
        super().__init__(options, context)
        self.shown_dsn = protect_dsn(options.dsn)
        self.numeric = numeric_type(options.numeric)
        self._conn: Any = None
        self._types: list[pa.DataType] = []

    def database(self) -> str:
        return self.shown_dsn

    def _error(self, exc: BaseException) -> SourceError:
        return SourceError(f"source '{self.context.plugin_id}' ({self.shown_dsn}): "
                           f"{describe_error(exc)}")

    async def _connect(self) -> Any:
        kwargs: dict[str, Any] = {"timeout": self.options.connect_timeout}
        if self.options.ssl:
            kwargs["ssl"] = self.options.ssl
        return await asyncpg.connect(self.options.dsn, **kwargs)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _attempt(self, after: Any, limit: int) -> tuple[list[str], list[Any]]:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect()
            if after is _START:
                stmt = await self._conn.prepare(self.first_page_sql)
                rows = await stmt.fetch(limit)
            else:
                stmt = await self._conn.prepare(self.next_page_sql)
                rows = await stmt.fetch(after, limit)
        except BaseException:
            await self._drop_connection()  # a half-used connection is not worth keeping
            raise
        attributes = stmt.get_attributes()
        if not self._types:
            self._types = [arrow_type_of_pg(a.type.name, a.type.kind, self.numeric)
                           for a in attributes]
        return [a.name for a in attributes], rows

    async def fetch(self, after: Any, limit: int) -> tuple[list[str], Sequence[Sequence[Any]]]:
        policy = self.context.policy
        try:
            if policy is None:
                return await self._attempt(after, limit)
            return await policy.call(lambda: self._attempt(after, limit))
        except RetriesExhausted as exc:
            raise SourceError(f"source '{self.context.plugin_id}' ({self.shown_dsn}): "
                              f"{describe_error(exc)}",
                              hint="run again with --resume once the database is back"
                              ) from exc
        except asyncpg.PostgresError as exc:
            raise self._error(exc) from exc

    def schema_for(self, names: list[str], rows: Sequence[Sequence[Any]]) -> pa.Schema:
        return pa.schema(list(zip(names, self._types, strict=True)))

    async def open(self) -> None:
        try:
            self._conn = await connect_with_policy(self.context.policy, self._connect)
        except RetriesExhausted as exc:
            raise SourceError(f"source '{self.context.plugin_id}' ({self.shown_dsn}): cannot "
                              f"connect: {redact(str(exc))}", hint=CONNECT_HINT) from exc
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise self._error(exc) from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    def snapshot(self) -> list[Any] | None:
        """Runs ``fingerprint_query`` on a connection of its own in a thread with its own
        event loop: ``fingerprint`` is called before the run's loop starts."""
        query = self.options.fingerprint_query
        if not query:
            return None
        result: list[Any] = []
        failure: list[BaseException] = []

        async def read() -> None:
            conn = await self._connect()
            try:
                row = await conn.fetchrow(query)
                result.extend(row.values() if row is not None else [])
            finally:
                await conn.close()

        def run() -> None:
            try:
                asyncio.run(read())
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=run, name="headrace-pg-fingerprint")
        thread.start()
        thread.join()
        if failure:
            raise self._error(failure[0]) from failure[0]
        return result
