"""The ``urls`` source: URLs from a file, one a line, or a column of a CSV/JSONL/Parquet file.

Every record is ``{"url": ...}``; a line's record id is its line number, so dead letters and
resumes name the line. The URLs are data: the steps that fetch them check each destination.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from headrace.errors import ConfigValueError
from headrace.plugin import Batch, Options, PluginContext, Position, Source, empty_table

from .._csv_source import CsvOptions, CsvSource
from .._jsonl_source import JsonlOptions, JsonlSource
from .._linesource import LineSource, LineSourceOptions
from .._parquet_source import ParquetOptions, ParquetSource

URL_SCHEMA = pa.schema([("url", pa.string())])


class UrlsOptions(Options):
    path: str = Field(description="The file, relative to the pipeline file; '-' for stdin.")
    format: Literal["auto", "lines", "csv", "jsonl", "parquet"] = Field(
        default="auto", description="auto: by extension (.csv, .jsonl/.ndjson, .parquet; "
        "anything else is one URL a line).")
    column: str = Field(default="url", description="The column holding URLs (not for lines).")


class _UrlLines(LineSource):
    """One URL a line; empty lines are skipped, surrounding spaces trimmed (a line of only
    spaces is a record with an empty URL: a dead letter naming its line)."""

    def parse(self, data: bytes) -> pa.Table:
        text = data.decode("utf-8")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        urls = [line.strip() for line in lines if line not in ("", "\r")]
        return pa.table({"url": pa.array(urls, pa.string())})

    def peek_schema(self) -> pa.Schema | None:
        return URL_SCHEMA

    def empty_table(self) -> pa.Table:
        return empty_table(URL_SCHEMA)


def _format(path: str, chosen: str) -> str:
    if chosen != "auto":
        return chosen
    name = path.lower()
    for suffix in (".gz", ".zst", ".bz2"):
        name = name.removesuffix(suffix)
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "lines"


class UrlsSource(Source):
    """Reads URLs through the file source of their format, keeping only the URL column."""

    summary = "URLs from a file: one a line, or a column of a CSV/JSONL/Parquet file"
    Options: ClassVar[type[UrlsOptions]] = UrlsOptions
    options: UrlsOptions
    resumable = True  # as the file sources are (stdin has no fingerprint: no checkpoints)

    def __init__(self, options: UrlsOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        fmt = _format(options.path, options.format)
        self.column = "url" if fmt == "lines" else options.column
        if fmt == "csv":
            self.inner: Source = CsvSource(CsvOptions(path=options.path), context)
        elif fmt == "jsonl":
            self.inner = JsonlSource(JsonlOptions(path=options.path), context)
        elif fmt == "parquet":
            # Projected below, not by `columns`: that would also hide the file's other
            # columns from peek_schema, and with them the hint for a misspelt column.
            self.inner = ParquetSource(ParquetOptions(path=options.path), context)
        else:
            self.inner = _UrlLines(LineSourceOptions(path=options.path), context)
        self.inner.project([self.column])

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    def fingerprint(self) -> dict[str, Any] | None:
        return self.inner.fingerprint()

    def resume_token(self, position: Position) -> dict[str, Any]:
        return self.inner.resume_token(position)

    async def resume(self, token: dict[str, Any]) -> None:
        await self.inner.resume(token)

    def total_size(self) -> int | None:
        return self.inner.total_size()

    def progress(self) -> int:
        return self.inner.progress()

    def peek_schema(self) -> pa.Schema | None:
        schema = self.inner.peek_schema()
        if schema is not None and self.column not in schema.names:
            raise ConfigValueError(
                f"{self.context.where('column')}: {self.options.path} has no column "
                f"'{self.column}'", hint=f"columns: {', '.join(schema.names)}")
        return URL_SCHEMA

    def _urls(self, batch: Batch) -> Batch:
        table = batch.to_arrow()
        if self.column not in table.column_names:
            if table.num_rows == 0:
                urls = pa.array([], pa.string())
            else:
                raise ConfigValueError(f"{self.context.where('column')}: "
                                       f"{self.options.path} has no column '{self.column}'")
        else:
            urls = table.column(self.column).cast(pa.string())
        out = Batch.from_arrow(pa.table({"url": urls}), row_ids=batch.row_ids,
                               position=batch.position)
        out.rejects = batch.rejects
        return out

    async def batches(self) -> AsyncIterator[Batch]:
        async for batch in self.inner.batches():
            yield self._urls(batch)
