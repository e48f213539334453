"""The ``parquet`` source: row groups streamed with pyarrow's batch iterator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from headrace.errors import SourceError
from headrace.plugin import Batch, Options, Position, Source


class ParquetOptions(Options):
    path: str = Field(description="Parquet file, relative to the pipeline file.")
    batch_size: int = Field(default=65536, ge=1, le=10_000_000, description="Rows per batch.")
    columns: list[str] | None = Field(default=None, description="Read only these columns.")


class ParquetSource(Source):
    summary = "Parquet file, streamed batch by batch (only the columns asked for)"
    example = {"path": "data/flights.parquet", "batch_size": 65536}
    Options: ClassVar[type[ParquetOptions]] = ParquetOptions
    options: ParquetOptions

    def __init__(self, options: ParquetOptions, context: Any) -> None:
        super().__init__(options, context)
        self.path = context.resolve_path(options.path)
        self._file: pq.ParquetFile | None = None
        self._rows_read = 0
        self._skip_to = 0
        self._columns = options.columns

    def _open_file(self) -> pq.ParquetFile:
        try:
            # pre_buffer (pyarrow's default) keeps what it read ahead of every row group
            # passed: memory would follow the file's size.
            return pq.ParquetFile(self.path, pre_buffer=False)
        except FileNotFoundError:
            raise SourceError(f"{self.path}: no such file") from None
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.path}: not a readable Parquet file: {exc}") from None

    async def open(self) -> None:
        self._file = await anyio.to_thread.run_sync(self._open_file)

    async def close(self) -> None:
        if self._file is not None:
            await anyio.to_thread.run_sync(self._file.close)
            self._file = None

    def total_size(self) -> int | None:
        return self._file.metadata.num_rows if self._file is not None else None

    def progress(self) -> int:
        return self._rows_read

    def project(self, columns: list[str]) -> bool:
        self._columns = columns
        return True

    def peek_schema(self) -> pa.Schema | None:
        try:
            schema = pq.read_schema(self.path)
        except (OSError, pa.ArrowException):
            return None
        if self.options.columns:
            return pa.schema([schema.field(c) for c in self.options.columns if c in schema.names])
        return schema

    resumable = True

    def fingerprint(self) -> dict[str, Any] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None  # open() reports it
        return {"path": str(self.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    async def resume(self, token: dict[str, Any]) -> None:
        self._skip_to = int(token["offset"])

    async def batches(self) -> AsyncIterator[Batch]:
        assert self._file is not None
        metadata = self._file.metadata
        groups, skipped = [], 0
        for index in range(metadata.num_row_groups):  # whole row groups before a resume point
            rows = metadata.row_group(index).num_rows
            if skipped + rows <= self._skip_to:
                skipped += rows
            else:
                groups.append(index)
        self._rows_read = skipped
        iterator: Iterator[pa.RecordBatch] = self._file.iter_batches(
            batch_size=self.options.batch_size, columns=self._columns, row_groups=groups
        )
        while True:
            record_batch = await anyio.to_thread.run_sync(next, iterator, None)
            if record_batch is None:
                return
            if self._rows_read < self._skip_to:  # the rest of a row group already committed
                drop = min(self._skip_to - self._rows_read, record_batch.num_rows)
                self._rows_read += drop
                record_batch = record_batch.slice(drop)
                if record_batch.num_rows == 0:
                    continue
            start = self._rows_read
            self._rows_read += record_batch.num_rows
            yield Batch.from_arrow(
                record_batch,
                row_ids=np.arange(start, self._rows_read, dtype=np.int64),
                position=Position(str(self.path), start, self._rows_read, unit="row"),
            )
