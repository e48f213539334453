"""What file sinks share: a temporary file in the target folder, published on success,
blocking writes in a worker thread, and batches conformed to the first batch's schema."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any, ClassVar

import anyio
import pyarrow as pa
from pydantic import Field

from headrace.engine import discard, prepare_output, publish
from headrace.errors import SinkError
from headrace.plugin import Batch, Options, Sink

from ._schemas import schema_from_text, schema_to_text


class FileSinkOptions(Options):
    path: str = Field(description="Output file, relative to the pipeline file; '-' for stdout.")


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """``table`` with ``schema``'s columns in its order and types (missing columns as nulls)."""
    if table.schema.equals(schema):
        return table
    extra = [n for n in table.schema.names if n not in schema.names]
    if extra:
        raise SinkError(
            f"{where}: column {extra[0]!r} appeared after the first batch fixed the columns "
            f"({', '.join(schema.names)})",
            hint="select or cast columns before the sink so every batch has the same schema",
        )
    columns = []
    for field in schema:
        if field.name in table.schema.names:
            column = table.column(field.name)
            try:
                columns.append(column.cast(field.type) if column.type != field.type else column)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SinkError(
                    f"{where}: column {field.name!r} is {column.type} in a later batch but "
                    f"{field.type} in the first: {exc}",
                    hint="add a cast step before the sink",
                ) from None
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


class FileSink(Sink):
    """Subclasses implement ``_open_writer``, ``_write_table`` and ``_close_writer``.

    Checkpoints (line formats): flush and fsync the temporary file and remember its length;
    a resumed run cuts the file back to that length and appends. Parquet overrides this.
    """

    Options: ClassVar[type[FileSinkOptions]] = FileSinkOptions
    options: FileSinkOptions
    atomic = True  # .partial + fsync + rename
    idempotent = True  # a resume cuts the partial file back to the checkpoint

    def __init__(self, options: FileSinkOptions, context: Any) -> None:
        super().__init__(options, context)
        self.to_stdout = options.path == "-"
        self.final: Path | None = None if self.to_stdout else context.resolve_path(options.path)
        self.temp: Path | None = None
        self.schema: pa.Schema | None = None
        self._handle: IO[bytes] | None = None
        self._done = False
        self._continuing = False  # resumed: the header (if any) is already in the file
        self._empty_schema = pa.schema([])  # of the last empty batch: for an empty output

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        return not self.to_stdout

    def describe(self) -> str:
        return str(self.final) if self.final else "<stdout>"

    async def open(self) -> None:
        if self.final is not None:
            self.temp = await anyio.to_thread.run_sync(prepare_output, self.final)

    def _target(self) -> IO[bytes]:
        if self._handle is None:
            if self.to_stdout:
                self._handle = sys.stdout.buffer
            else:
                assert self.temp is not None
                try:
                    self._handle = open(self.temp, "wb")  # noqa: SIM115
                except OSError as exc:
                    raise SinkError(f"cannot write {self.final}: {exc.strerror or exc}") from exc
        return self._handle

    def _write_blocking(self, batch: Batch) -> None:
        table = batch.to_arrow()
        if self.schema is None:
            if table.num_rows == 0:  # its columns may be a step's input's: wait for records
                self._empty_schema = table.schema
                return
            self.schema = table.schema
            self._open_writer(self._target(), self.schema)
        if table.num_rows:
            self._write_table(conform(table, self.schema, self.describe()))

    async def write(self, batch: Batch) -> None:
        try:
            await anyio.to_thread.run_sync(self._write_blocking, batch)
        except OSError as exc:
            raise SinkError(f"cannot write {self.describe()}: {exc.strerror or exc}") from exc

    def _finish_blocking(self) -> None:
        if self.schema is None:
            self.schema = self._empty_schema
            self._open_writer(self._target(), self.schema)
        self._close_writer()
        if self._handle is not None and not self.to_stdout:
            self._handle.close()
        elif self.to_stdout:
            sys.stdout.buffer.flush()
        self._handle = None
        if self.temp is not None and self.final is not None:
            publish(self.temp, self.final)
        self._done = True

    async def finish(self) -> None:
        if self._done:
            return
        try:
            await anyio.to_thread.run_sync(self._finish_blocking)
        except OSError as exc:
            raise SinkError(f"cannot write {self.describe()}: {exc.strerror or exc}") from exc

    def _abort_blocking(self) -> None:
        try:
            self._close_writer()
        except Exception:
            self.context.logger.debug("closing a discarded writer failed", exc_info=True)
        if self._handle is not None and not self.to_stdout:
            self._handle.close()
        self._handle = None
        # A checkpointed run keeps its partial output: ``--resume`` continues it.
        if self.temp is not None and not self.checkpointing:
            discard(self.temp)

    # -- checkpoints --------------------------------------------------------------------
    def _checkpoint_blocking(self) -> dict[str, Any]:
        self._flush_writer()
        length = 0
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            length = self._handle.tell()
        return {"bytes": length, "schema": schema_to_text(self.schema)}

    async def checkpoint(self) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(self._checkpoint_blocking)
        except OSError as exc:
            raise SinkError(f"cannot write {self.describe()}: {exc.strerror or exc}") from exc

    def _resume_blocking(self, state: dict[str, Any]) -> None:
        assert self.temp is not None and self.final is not None
        if state.get("publishing") and not self.temp.exists() and self.final.exists():
            self._done = True  # the killed run had published it already
            return
        length = int(state.get("bytes", 0))
        self.schema = schema_from_text(state.get("schema"))
        if self.schema is None:
            return  # nothing was written yet: start as a fresh run would
        try:
            handle = open(self.temp, "r+b")  # noqa: SIM115
        except FileNotFoundError:
            raise SinkError(f"cannot resume: the partial output {self.temp} is gone",
                            hint="run without --resume to start over") from None
        handle.truncate(length)  # drop what was written after the checkpoint
        handle.seek(length)
        self._handle = handle
        self._continuing = True
        self._open_writer(handle, self.schema)

    async def resume(self, state: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self._resume_blocking, state)

    async def abort(self) -> None:
        if not self._done:
            await anyio.to_thread.run_sync(self._abort_blocking)

    # -- format specifics ---------------------------------------------------------------
    def _open_writer(self, handle: IO[bytes], schema: pa.Schema) -> None:
        raise NotImplementedError

    def _write_table(self, table: pa.Table) -> None:
        raise NotImplementedError

    def _close_writer(self) -> None:
        raise NotImplementedError

    def _flush_writer(self) -> None:
        """Push what the format writer buffers into the file (before an fsync)."""
