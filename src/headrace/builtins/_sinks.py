"""Parquet, CSV and JSON Lines file sinks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field

from headrace.engine import fsync_dir, publish
from headrace.errors import ConfigValueError, SinkError

from ._file_sink import FileSink, FileSinkOptions
from ._schemas import schema_from_text, schema_to_text


class ParquetSinkOptions(FileSinkOptions):
    compression: Literal["snappy", "zstd", "gzip", "lz4", "none"] = Field(
        default="snappy", description="Parquet column compression."
    )
    row_group_size: int = Field(default=1_000_000, ge=1, description="Rows per row group.")
    row_group_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Batches are gathered into one row group up to this many bytes in memory.",
    )


class ParquetSink(FileSink):
    summary = "Parquet file, written atomically (temporary name, renamed on success)"
    example = {"path": "out/records.parquet", "compression": "zstd"}
    Options: ClassVar[type[ParquetSinkOptions]] = ParquetSinkOptions
    options: ParquetSinkOptions
    _writer: pq.ParquetWriter | None = None

    def __init__(self, options: ParquetSinkOptions, context: Any) -> None:
        super().__init__(options, context)
        # Small batches (after a selective filter) would each become a tiny row group: slow to
        # write and to read. They are gathered up to a row or byte budget instead.
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        if self.to_stdout:
            raise ConfigValueError("the parquet sink cannot write to stdout",
                                   hint="use csv or jsonl")

    def _open_writer(self, handle: IO[bytes], schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(
            handle, schema, compression=self.options.compression
        )

    def _flush(self) -> None:
        assert self._writer is not None
        if self._pending:
            table = pa.concat_tables(self._pending)
            self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
            self._writer.write_table(table, row_group_size=self.options.row_group_size)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def _flush_writer(self) -> None:
        self._flush()

    def _abort_blocking(self) -> None:
        self._pending = []  # no point writing what is about to be discarded
        super()._abort_blocking()

    # -- checkpoints: committed segments, assembled into one file at the end ------------
    # A Parquet file is only readable once its footer is written, so a checkpoint closes
    # the current segment (part-NNNNNN.parquet in a hidden folder next to the output) and
    # the next write starts another. Segment names follow the commit sequence, so a resumed
    # run drops the segments after its checkpoint and rewrites them.
    _segments = 0

    @property
    def parts(self) -> Path:
        assert self.final is not None
        return self.final.with_name(f".{self.final.name}.parts")

    def _segment(self, index: int) -> Path:
        return self.parts / f"part-{index:06d}.parquet"

    def _target(self) -> IO[bytes]:
        if not self.checkpointing:
            return super()._target()
        if self._handle is None:
            self.parts.mkdir(exist_ok=True)
            self._handle = open(self.parts / ".writing.tmp", "wb")  # noqa: SIM115
        return self._handle

    def _write_table(self, table: pa.Table) -> None:
        if self._writer is None:  # a checkpoint closed the last segment
            assert self.schema is not None
            self._open_writer(self._target(), self.schema)
        self._write_pending(table)

    def _write_pending(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        if (self._pending_rows >= self.options.row_group_size
                or self._pending_bytes >= self.options.row_group_bytes):
            self._flush()

    def _commit_segment(self) -> None:
        if self._writer is None:
            return
        self._close_writer()
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        os.replace(self.parts / ".writing.tmp", self._segment(self._segments))
        fsync_dir(self.parts)
        self._segments += 1

    def _checkpoint_blocking(self) -> dict[str, Any]:
        self._commit_segment()
        return {"segments": self._segments, "schema": schema_to_text(self.schema)}

    def _resume_blocking(self, state: dict[str, Any]) -> None:
        self._segments = int(state.get("segments", 0))
        self.schema = schema_from_text(state.get("schema"))
        assert self.temp is not None and self.final is not None
        if state.get("publishing") and not all(
                self._segment(i).exists() for i in range(self._segments)):
            # The killed run's finish had taken the segments (one renamed to the temporary
            # file, or several assembled and published): what is left is the last steps.
            if self.temp.exists():
                publish(self.temp, self.final)
            shutil.rmtree(self.parts, ignore_errors=True)
            self._done = True
            return
        if not self.parts.is_dir():
            if self._segments:
                raise SinkError(f"cannot resume: the committed segments in {self.parts} are "
                                "gone", hint="run without --resume to start over")
            return
        for path in self.parts.iterdir():  # anything after the checkpoint is written again
            if not (path.name.startswith("part-") and path.name < self._segment(
                    self._segments).name):
                path.unlink()

    def _finish_blocking(self) -> None:
        if not self.checkpointing:
            super()._finish_blocking()
            return
        self._commit_segment()
        assert self.temp is not None and self.final is not None
        segments = [self._segment(i) for i in range(self._segments)]
        if len(segments) == 1:
            os.replace(segments[0], self.temp)  # the common short run: no copy
        else:
            # As the segments store it (Parquet keeps timestamp[s] as timestamp[ms]).
            # No segment (no records): the columns of the last empty batch, as without
            # checkpoints.
            schema = (pq.read_schema(segments[0]) if segments
                      else self.schema or self._empty_schema)
            with pq.ParquetWriter(self.temp, schema,
                                  compression=self.options.compression) as writer:
                for segment in segments:
                    part = pq.ParquetFile(segment)
                    for index in range(part.num_row_groups):
                        writer.write_table(part.read_row_group(index))
        publish(self.temp, self.final)
        shutil.rmtree(self.parts, ignore_errors=True)
        self._done = True


class CsvSinkOptions(FileSinkOptions):
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    header: bool = Field(default=True, description="Write the column names first.")


class CsvSink(FileSink):
    summary = "CSV file or stdout ('-'), written atomically"
    example = {"path": "out/records.csv"}
    Options: ClassVar[type[CsvSinkOptions]] = CsvSinkOptions
    options: CsvSinkOptions
    _writer: pacsv.CSVWriter | None = None

    def _open_writer(self, handle: IO[bytes], schema: pa.Schema) -> None:
        self._writer = pacsv.CSVWriter(
            handle, schema,
            write_options=pacsv.WriteOptions(
                include_header=self.options.header and not self._continuing,
                delimiter=self.options.delimiter,
            ),
        )

    def _write_table(self, table: pa.Table) -> None:
        assert self._writer is not None
        try:
            self._writer.write_table(table)
        except pa.ArrowNotImplementedError as exc:
            raise SinkError(f"{self.describe()}: CSV cannot hold this data: {exc}",
                            hint="select flat columns or use the jsonl/parquet sink") from None

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class JsonlSink(FileSink):
    summary = "JSON Lines file or stdout ('-'), written atomically"
    example = {"path": "out/records.jsonl"}
    _target_handle: IO[bytes] | None = None

    def _open_writer(self, handle: IO[bytes], schema: pa.Schema) -> None:
        self._target_handle = handle

    def _write_table(self, table: pa.Table) -> None:
        assert self._target_handle is not None
        dumps = json.dumps
        text = "".join(
            dumps(row, default=str, ensure_ascii=False) + "\n" for row in table.to_pylist()
        )
        self._target_handle.write(text.encode("utf-8"))

    def _close_writer(self) -> None:
        self._target_handle = None


class StdoutOptions(FileSinkOptions):
    path: str = Field(default="-", pattern="^-$", description="Always stdout.")
    format: Literal["jsonl", "csv"] = Field(default="jsonl", description="Output format.")


class StdoutSink(JsonlSink):
    """Records to stdout as JSON Lines (or CSV with ``format: csv``)."""

    summary = "records to stdout as JSON Lines or CSV"
    Options: ClassVar[type[StdoutOptions]] = StdoutOptions
    options: StdoutOptions
    atomic = False  # what is printed is gone
    idempotent = False
    _csv: pacsv.CSVWriter | None = None

    def _open_writer(self, handle: IO[bytes], schema: pa.Schema) -> None:
        if self.options.format == "csv":
            self._csv = pacsv.CSVWriter(handle, schema)
        super()._open_writer(handle, schema)

    def _write_table(self, table: pa.Table) -> None:
        if self._csv is not None:
            self._csv.write_table(table)
        else:
            super()._write_table(table)

    def _close_writer(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        super()._close_writer()
