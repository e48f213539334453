"""The ``postgres`` sink: rows and the run's checkpoint commit in one transaction.

Between two checkpoints the rows go into one open transaction on one pooled connection.
``commit(checkpoint)`` (called by the engine at each checkpoint) upserts the engine's
checkpoint - with this sink's own state, a sequence number - into ``headrace_checkpoints``
(keyed by pipeline name and sink id) in that same transaction and COMMITs: the rows and the
position they cover become durable together. ``stored_checkpoint`` reads it back on
``--resume``, so a crash between this COMMIT and the engine's own ledger neither loses nor
repeats a row; nothing uncommitted survives a crash, so there is nothing to cut back.

A lost connection (the database restarting, a network cut) loses the open transaction. The
sink keeps the rows written since the last commit (up to ``max_pending_rows``) and, under
its ``retry``/``timeout``/``breaker`` policy, reconnects, writes them again and carries on.
A COMMIT whose answer was lost is resolved by reading the stored sequence number back. When
the attempts run out the run stops; ``--resume`` continues after the last commit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from headrace.config import Duration, redact
from headrace.errors import SinkError
from headrace.plugin import Batch, DeadRecord, Options, RetriesExhausted, Sink

from ._driver import (
    CONNECT_HINT,
    asyncpg_module,
    connect_with_policy,
    describe_error,
    protect_dsn,
    transient_errors,
)
from ._keyset import TABLE_NAME, quote_table
from ._pool import Pool, PoolOptions
from ._writer import TableWriter

asyncpg = asyncpg_module()
T = TypeVar("T")
CHECKPOINTS_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    pipeline text NOT NULL,
    sink text NOT NULL,
    seq bigint NOT NULL,
    checkpoint jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, sink))"""


def alive(conn: Any) -> bool:
    """Whether a pooled connection still works: one that died while acquired was handed
    back by asyncpg, and its proxy refuses every call."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


class PostgresSinkOptions(Options):
    dsn: str = Field(description="postgresql://user:password@host:port/database (the "
                     "password is hidden in every message).")
    table: str = Field(pattern=TABLE_NAME, description="Table to write (name or schema.name).")
    mode: Literal["insert", "upsert", "copy"] = Field(
        default="insert", description="insert; upsert: INSERT ... ON CONFLICT (key) DO "
        "UPDATE; copy: binary COPY (fastest).")
    key: list[str] = Field(default_factory=list, description="Unique key: the conflict key "
                           "of upsert; create: true makes it the primary key.")
    create: bool = Field(default=True, description="CREATE TABLE IF NOT EXISTS from the "
                         "first batch's Arrow schema.")
    if_exists: Literal["append", "replace"] = Field(
        default="append", description="Rows already in the table on a fresh run: append, "
        "or replace (deleted in the run's first transaction).")
    pool: PoolOptions = Field(default_factory=PoolOptions,
                              description="Connection pool: min, max, timeout (acquire).")
    batch_size: int = Field(default=5000, ge=1, le=1_000_000,
                            description="Rows per INSERT/COPY statement.")
    max_pending_rows: int = Field(
        default=500_000, ge=0, le=100_000_000, description="Rows kept in memory since the "
        "last commit, to write them again after a lost connection; past it a lost "
        "connection stops the run (--resume continues).")
    checkpoint_table: str = Field(default="headrace_checkpoints", pattern=TABLE_NAME,
                                  description="Where checkpoints are committed with the rows.")
    connect_timeout: Duration = Field(default=10.0, gt=0, le=600,
                                   description="Seconds to open a connection.")
    ssl: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        default=None, description="TLS mode (default: as the DSN says).")

    @model_validator(mode="after")
    def _check_key(self) -> PostgresSinkOptions:
        if self.mode == "upsert" and not self.key:
            raise ValueError("mode: upsert needs key: [columns]")
        return self


class PostgresSink(Sink):
    """Rows into a Postgres table; rows and checkpoint commit in one transaction."""

    summary = "PostgreSQL table (insert, upsert or copy); rows and checkpoint in one transaction"
    example: ClassVar[dict[str, Any]] = {"dsn": "postgresql://app@localhost/shop",
                                         "table": "orders", "mode": "upsert", "key": ["id"]}
    Options: ClassVar[type[PostgresSinkOptions]] = PostgresSinkOptions
    options: PostgresSinkOptions
    resumable = True
    idempotent = True  # nothing uncommitted survives; the checkpoint commits with the rows
    applies_policy = True
    transient_errors = transient_errors()

    def __init__(self, options: PostgresSinkOptions, context: Any) -> None:
        super().__init__(options, context)
        self.shown_dsn = protect_dsn(options.dsn)
        connect: dict[str, Any] = {"timeout": options.connect_timeout}
        if options.ssl:
            connect["ssl"] = options.ssl
        self.pool = Pool(options.dsn, options.pool, context, connect)
        self.writer = TableWriter(options.table, options.mode, options.key,
                                  options.batch_size, options.create)
        self.checkpoints = quote_table(options.checkpoint_table)
        self._conn: Any = None  # holds the open transaction
        self._tx: Any = None
        self._pending: list[pa.Table] = []  # written since the last commit, for a replay
        self._pending_rows = 0
        self._replayable = True
        self._replace = False  # a fresh replacing run: DELETE in its first transaction
        self._schema: pa.Schema | None = None
        self._seq = 0  # the last committed checkpoint's sequence number
        self._commit_unknown: int | None = None  # a COMMIT sent whose answer was lost
        self._records = -1  # the engine's record count at the last commit

    def describe(self) -> str:
        return f"{self.shown_dsn}: {self.options.table}"

    def _error(self, what: str, exc: BaseException, hint: str | None = None) -> SinkError:
        return SinkError(f"sink '{self.context.plugin_id}' ({self.describe()}): {what}: "
                         f"{describe_error(exc)}", hint=hint)

    # -- connections and the open transaction ---------------------------------------------
    async def _policy(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """One operation under the sink's retry/timeout/breaker; translated errors."""
        try:
            policy = self.context.policy
            return await (attempt() if policy is None else policy.call(attempt))
        except RetriesExhausted as exc:  # "gave up after 3 attempts: OSError: ..."
            raise SinkError(f"sink '{self.context.plugin_id}' ({self.describe()}): {what}: "
                            f"{redact(str(exc))}", hint="the last checkpoint is committed: "
                            "run again with --resume once the database is back") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._error(what, exc) from exc

    async def _drop(self, *, rollback: bool) -> None:
        """Leave the open transaction: rolled back, or (after a failure) with its connection."""
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if conn is None:
            return
        with anyio.CancelScope(shield=True):
            healthy = rollback and not conn.is_closed()
            if healthy and tx is not None:
                try:
                    with anyio.fail_after(5):
                        await tx.rollback()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                    healthy = False
            await self.pool.release(conn, discard=not healthy)

    async def _transaction(self) -> Any:
        """The connection of the open transaction; a new one replays what was pending."""
        if self._conn is not None:
            if alive(self._conn):
                return self._conn
            await self._drop(rollback=False)  # died while idle: open a new one, replay
        if self._pending_rows and not self._replayable:
            raise SinkError(f"sink '{self.context.plugin_id}' ({self.describe()}): the "
                            f"connection was lost with more than {self.options.max_pending_rows}"
                            " uncommitted rows", hint="run again with --resume")
        conn = await self.pool.acquire()
        try:
            if self._schema is not None:
                await self.writer.prepare(conn, self._schema)
            tx = conn.transaction()
            await tx.start()
            if self._replace and self.writer.columns is not None:
                await conn.execute(f"DELETE FROM {self.writer.target}")
            for table in self._pending:  # what the lost transaction held
                statement = self.writer.statement(table.schema.names)
                columns = await anyio.to_thread.run_sync(self.writer.values, table, statement)
                await self.writer.write(conn, columns, statement)
        except BaseException:
            await self.pool.release(conn, discard=True)
            raise
        if self._pending:
            self.context.emit("replays")
        self._conn, self._tx = conn, tx
        return conn

    async def _in_transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        conn = await self._transaction()
        try:
            return await work(conn)
        except asyncpg.InterfaceError as exc:
            lost = not alive(conn)
            await self._drop(rollback=False)
            if lost:  # asyncpg handed the dead connection back: a connection error
                raise ConnectionResetError(f"the connection was lost: {exc}") from exc
            raise
        except BaseException:
            await self._drop(rollback=False)  # the transaction is lost: a retry replays
            raise

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await connect_with_policy(self.context.policy, self.pool.open)
        except RetriesExhausted as exc:
            raise SinkError(f"sink '{self.context.plugin_id}' ({self.describe()}): cannot "
                            f"connect: {redact(str(exc))}", hint=CONNECT_HINT) from exc
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self._error("cannot connect", exc, hint=CONNECT_HINT) from exc
        if self.checkpointing:
            await self._policy(self._create_checkpoint_table, "open")
        else:
            self._start_fresh_flags()

    async def _create_checkpoint_table(self) -> None:
        conn = await self.pool.acquire()
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                   f"headrace:{self.options.checkpoint_table}")
                await conn.execute(CHECKPOINTS_DDL.format(table=self.checkpoints))
        finally:
            await self.pool.release(conn)

    def _start_fresh_flags(self) -> None:
        self._replace = self.options.if_exists == "replace"

    async def _read_stored(self) -> tuple[int, dict[str, Any]] | None:
        """The stored checkpoint's sequence number and content (None: there is none)."""
        conn = await self.pool.acquire()
        try:
            row = await conn.fetchrow(
                f"SELECT seq, checkpoint FROM {self.checkpoints} WHERE pipeline = $1 AND "
                "sink = $2", self.context.pipeline_name, self.context.plugin_id)
        finally:
            await self.pool.release(conn)
        return None if row is None else (int(row["seq"]), json.loads(row["checkpoint"]))

    async def _stored(self) -> tuple[int, dict[str, Any]] | None:
        return await self._policy(self._read_stored, "reading the stored checkpoint")

    async def stored_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint committed with the rows - of a run over the same input."""
        stored = await self._stored()
        if (stored is None or "records" not in stored[1]
                or stored[1].get("sink", {}).get("input") != self.input_identity):
            return None
        return stored[1]

    async def resume(self, state: dict[str, Any]) -> None:
        stored = await self._stored()
        if not state or "seq" not in state:  # a fresh run: forget an earlier run's checkpoint
            self._start_fresh_flags()
            if stored is not None:
                await self._policy(self._forget_checkpoint, "starting over")
            return
        self._seq = int(state["seq"])
        self._records = int(state.get("records", -1))
        if stored is None:  # nothing says the database is ahead: the ledger's state holds
            self.context.logger.warning(
                "%s holds no checkpoint of pipeline '%s' (sink '%s'): resuming from the run's "
                "ledger", self.describe(), self.context.pipeline_name, self.context.plugin_id)
            return
        stored_seq = stored[0]
        if stored_seq != self._seq:
            raise SinkError(
                f"cannot resume: {self.describe()} holds checkpoint {stored_seq} of pipeline "
                f"'{self.context.pipeline_name}' (sink '{self.context.plugin_id}'), the run's "
                f"ledger checkpoint {self._seq}",
                hint=f"was {self.options.checkpoint_table} or the table changed? run without "
                "--resume to start over")

    async def _forget_checkpoint(self) -> None:
        conn = await self.pool.acquire()
        try:
            await conn.execute(f"DELETE FROM {self.checkpoints} WHERE pipeline = $1 AND "
                               "sink = $2", self.context.pipeline_name, self.context.plugin_id)
        finally:
            await self.pool.release(conn)

    async def write(self, batch: Batch) -> list[DeadRecord] | None:
        table = batch.to_arrow()
        if table.num_columns == 0 or table.num_rows == 0:
            return None
        if self._schema is None:
            self._schema = table.schema

        async def attempt() -> list[Any]:
            async def work(conn: Any) -> list[Any]:
                statement = self.writer.statement(table.schema.names)
                columns = await anyio.to_thread.run_sync(self.writer.values, table, statement)
                return await self.writer.write(conn, columns, statement)

            return await self._in_transaction(work)

        started = time.monotonic()
        refused = await self._policy(attempt, "write")
        self.context.emit("write_seconds", time.monotonic() - started)
        dead: list[DeadRecord] = []
        if refused:
            bad = {r.index for r in refused}
            for r in refused:
                dead.append(DeadRecord(batch.record(r.index), r.error, r.message,
                                       batch.row_id(r.index)))
            keep = np.array([i not in bad for i in range(table.num_rows)])
            table = table.filter(pa.array(keep))
        self._remember(table)
        self.context.emit("rows_written", table.num_rows)
        return dead or None

    def _remember(self, table: pa.Table) -> None:
        if not self._replayable:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows > self.options.max_pending_rows:
            self._pending.clear()
            self._replayable = False

    def _committed(self) -> None:
        self._pending.clear()
        self._pending_rows = 0
        self._replayable = True
        self._replace = False

    async def commit(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """The rows since the last commit and ``checkpoint``, in one transaction."""
        records = int(checkpoint.get("records", -2))
        if records == self._records and self._conn is None and not self._pending_rows:
            # Nothing new (the final checkpoint after an idle interval): committing again
            # would put the database one sequence number ahead of a ledger killed meanwhile.
            return self._state(self._seq)
        seq = self._seq + 1
        state = self._state(seq, records)
        stored = json.dumps({**checkpoint, "sink": state})

        async def attempt() -> None:
            if self._commit_unknown == seq:  # the last try's COMMIT may have gone through
                found = await self._read_stored()
                if found is not None and found[0] == seq:
                    return
                self._commit_unknown = None

            async def work(conn: Any) -> None:
                await conn.execute(
                    f"INSERT INTO {self.checkpoints} (pipeline, sink, seq, checkpoint) "
                    "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (pipeline, sink) DO UPDATE "
                    "SET seq = EXCLUDED.seq, checkpoint = EXCLUDED.checkpoint, "
                    "updated_at = now()", self.context.pipeline_name, self.context.plugin_id,
                    seq, stored)
                self._commit_unknown = seq
                await self._tx.commit()

            await self._in_transaction(work)
            await self._release()

        started = time.monotonic()
        await self._policy(attempt, "commit")
        self.context.emit("commit_seconds", time.monotonic() - started)
        self.context.emit("commits")
        self._commit_unknown = None
        self._seq, self._records = seq, records
        self._committed()
        return state

    def _state(self, seq: int, records: int | None = None) -> dict[str, Any]:
        """What the ledger keeps of this sink: the checkpoint's sequence number, the record
        count it covers, and the input it was made from (the source's fingerprint)."""
        return {"seq": seq, "records": self._records if records is None else records,
                "input": self.input_identity}

    async def _release(self) -> None:
        conn = self._conn
        self._conn = self._tx = None
        await self.pool.release(conn)

    async def checkpoint(self) -> dict[str, Any]:
        """For callers without an engine checkpoint: the rows commit with an empty one (which
        ``stored_checkpoint`` never offers to resume from)."""
        return await self.commit({})

    async def _empty_table(self) -> None:
        conn = await self.pool.acquire()
        try:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self.writer.target):
                await conn.execute(f"DELETE FROM {self.writer.target}")
        finally:
            await self.pool.release(conn)

    async def finish(self) -> None:
        if self._conn is None and not self._pending_rows:
            if self._replace:  # a replacing run that wrote nothing: an empty table
                await self._policy(self._empty_table, "finish")
                self._replace = False
            return

        async def attempt() -> None:
            async def work(conn: Any) -> None:
                await self._tx.commit()

            await self._in_transaction(work)
            await self._release()

        # Without checkpoints nothing tells whether a COMMIT whose answer was lost went
        # through, so it is not tried again.
        policy_free = not self.checkpointing
        try:
            if policy_free:
                await attempt()
            else:
                await self._policy(attempt, "finish")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._error("commit", exc) from exc
        self._committed()

    async def abort(self) -> None:
        await self._drop(rollback=True)  # committed checkpoints stay

    async def close(self) -> None:
        try:
            await self._drop(rollback=True)
        finally:
            try:
                await self.pool.close()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                self.context.logger.warning("%s", self._error("closing the pool", exc))
