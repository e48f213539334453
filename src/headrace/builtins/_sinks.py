"""Parquet, CSV and JSON Lines file sinks."""

from __future__ import annotations

import json
from typing import IO, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field

from headrace.errors import ConfigValueError, SinkError

from ._file_sink import FileSink, FileSinkOptions


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

    def _write_table(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        if (self._pending_rows >= self.options.row_group_size
                or self._pending_bytes >= self.options.row_group_bytes):
            self._flush()

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

    def _abort_blocking(self) -> None:
        self._pending = []  # no point writing what is about to be discarded
        super()._abort_blocking()


class CsvSinkOptions(FileSinkOptions):
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    header: bool = Field(default=True, description="Write the column names first.")


class CsvSink(FileSink):
    summary = "CSV file or stdout ('-'), written atomically"
    Options: ClassVar[type[CsvSinkOptions]] = CsvSinkOptions
    options: CsvSinkOptions
    _writer: pacsv.CSVWriter | None = None

    def _open_writer(self, handle: IO[bytes], schema: pa.Schema) -> None:
        self._writer = pacsv.CSVWriter(
            handle, schema,
            write_options=pacsv.WriteOptions(
                include_header=self.options.header, delimiter=self.options.delimiter
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
