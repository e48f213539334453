"""The shared part of line-based sources (CSV, JSONL): blocks of whole lines read ahead on one
thread and parsed by pyarrow on one thread per core, in order; lines that do not parse are
isolated and dead-lettered with their line number."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar

import anyio
import numpy as np
import pyarrow as pa
from pydantic import Field

from headrace.errors import SourceError
from headrace.plugin import (
    Batch,
    DeadRecord,
    Options,
    PluginContext,
    Position,
    Source,
    empty_table,
)

from ._lines import LineBlock, LineReader, compression_for, split_lines
from ._schemas import schema_from_text, schema_to_text

MiB = 1024 * 1024
PARSERS = max(1, min(4, os.cpu_count() or 1))
MOSTLY_BAD = 1000  # dead lines in one block before "most lines fail" is an error


class LineSourceOptions(Options):
    path: str = Field(description="Input file, relative to the pipeline file; '-' for stdin.")
    compression: str = Field(
        default="auto", pattern="^(auto|none|gzip|zstd|bz2)$",
        description="auto: by extension (.gz, .zst, .bz2).",
    )
    block_size: int = Field(
        default=8 * MiB, ge=4096, le=1024 * MiB, description="Bytes read and parsed at a time."
    )
    max_line_bytes: int = Field(
        default=64 * MiB, ge=4096,
        description="Longer lines are dead-lettered, not buffered (checked a block at a time: "
        "a line is dropped once this much of it has been read without a newline).",
    )


class LineSource(Source):
    """Subclasses implement ``parse`` (whole lines -> table), and may override ``prepare``
    (read a header), ``line_is_whole`` and ``empty_table``."""

    Options: ClassVar[type[LineSourceOptions]] = LineSourceOptions
    options: LineSourceOptions

    def __init__(self, options: LineSourceOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        path = None if options.path == "-" else context.resolve_path(options.path)
        self.reader = LineReader(
            path, compression_for(options.path, options.compression),
            options.block_size, max(options.max_line_bytes, options.block_size),
            stopping=lambda: context.stopping,
        )
        self._total = path.stat().st_size if path is not None and path.is_file() else None
        self._reader: ThreadPoolExecutor | None = None
        self._parsers: ThreadPoolExecutor | None = None
        self._next_read: Future[LineBlock | None] | None = None
        self._parsing: deque[Future[Batch]] = deque()
        self._read_done = False
        self._first_done = False
        self._peeked: tuple[pa.Schema | None] | None = None

    # -- what subclasses provide -------------------------------------------------------
    def prepare(self) -> None:
        """Read what comes before the records (a CSV header). Runs in a thread."""

    def parse(self, data: bytes) -> pa.Table:
        """Parse whole lines, one record each; raise ``pa.ArrowInvalid`` if any line is bad."""
        raise NotImplementedError

    # -- the machinery ------------------------------------------------------------------
    def total_size(self) -> int | None:
        return self._total

    def progress(self) -> int:
        return self.reader.raw_position()

    resumable = True  # a file; stdin has no fingerprint, so the engine does not checkpoint it

    def fingerprint(self) -> dict[str, Any] | None:
        path = self.reader.path
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return None  # open() reports it
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def resume_token(self, position: Position) -> dict[str, Any]:
        # The column types the first block fixed travel along: a resumed run must parse the
        # rest of the input exactly as the interrupted one would have.
        return {**super().resume_token(position), "types": schema_to_text(self.frozen_types())}

    async def resume(self, token: dict[str, Any]) -> None:
        types = schema_from_text(token.get("types"))
        if types is not None:
            self.freeze_types(types)
        await anyio.to_thread.run_sync(self.reader.seek, int(token["offset"]), int(token["row"]))

    def frozen_types(self) -> pa.Schema | None:
        """The types the first block fixed for the rest of the input; None if not yet."""
        return None

    def freeze_types(self, schema: pa.Schema) -> None:
        """Parse with these types from now on (a resumed run)."""

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self.reader.open)
        await anyio.to_thread.run_sync(self.prepare)
        # One thread reads ahead; PARSERS threads parse blocks side by side (each parse is
        # single-threaded: on two cores that beats pyarrow's own intra-block threads).
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="headrace-read")
        self._parsers = ThreadPoolExecutor(PARSERS, thread_name_prefix="headrace-parse")

    async def close(self) -> None:
        for pool in (self._parsers, self._reader):
            if pool is not None:
                await anyio.to_thread.run_sync(partial(pool.shutdown, cancel_futures=True))
        self._parsers = self._reader = None
        await anyio.to_thread.run_sync(self.reader.close)

    async def batches(self) -> AsyncIterator[Batch]:
        while True:
            batch = await anyio.to_thread.run_sync(self._next_batch)
            if batch is None:
                return
            yield batch

    def peek_schema(self) -> pa.Schema | None:
        """Columns and types as a run would see them, from the first 1 MiB (with a fresh
        reader, so the run itself starts from the top). Read once, then remembered."""
        if self._peeked is None:
            self._peeked = (self._peek(),)
        return self._peeked[0]

    def _peek(self) -> pa.Schema | None:
        if self.options.path == "-":
            return None
        path = self.context.resolve_path(self.options.path)
        if not path.is_file():
            return None
        probe = type(self)(self.options, self.context)
        probe.reader = LineReader(path, compression_for(self.options.path,
                                                        self.options.compression),
                                  1024 * 1024, self.options.max_line_bytes)
        try:
            probe.reader.open()
            probe.prepare()
            block = probe.reader.next_block()
            if block is None or not block.data:
                return probe.empty_table().schema
            return probe._parse_block(block)[0].schema  # bad lines isolated, as in a run
        except (SourceError, pa.ArrowException, OSError, ValueError):
            return None
        finally:
            probe.reader.close()

    def _read_next(self) -> LineBlock | None:
        """The next block, and the read of the one after it started."""
        assert self._reader is not None
        if self._next_read is None:
            self._next_read = self._reader.submit(self.reader.next_block)
        block = self._next_read.result()
        self._next_read = None if block is None else self._reader.submit(self.reader.next_block)
        if block is None:
            self._read_done = True
        return block

    def _keep_parsing(self) -> None:
        assert self._parsers is not None
        while not self._read_done and len(self._parsing) < PARSERS:
            block = self._read_next()
            if block is not None:
                self._parsing.append(self._parsers.submit(self._batch_from, block))

    def _next_batch(self) -> Batch | None:
        """Batches in input order. Runs in a worker thread."""
        if not self._first_done:
            # The first block is parsed alone: it fixes the types the others are read with.
            self._first_done = True
            block = self._read_next()
            if block is None:
                return None
            batch = self._batch_from(block)
            self._keep_parsing()
            return batch
        self._keep_parsing()
        if not self._parsing:
            return None
        batch = self._parsing.popleft().result()
        self._keep_parsing()
        return batch

    def _batch_from(self, block: LineBlock) -> Batch:
        position = Position(self.reader.label, block.start, block.end,
                            next_row=block.first_line + block.line_count)
        table, row_ids, rejects = self._parse_block(block)
        self.reader.release(block.data)  # parsed tables hold copies, never the input bytes
        batch = Batch.from_arrow(table, row_ids=row_ids, position=position)
        batch.rejects = block.oversized + rejects
        return batch

    def _parse_block(self, block: LineBlock) -> tuple[pa.Table, np.ndarray, list[DeadRecord]]:
        if self.values_first:  # the last block had bad values: do not parse it twice
            by_value = self._isolate_values(block, clean_ok=True)
            if by_value is not None:
                return by_value
        try:
            table = self.parse(block.data)
            # The common case: a record per line. (A bare CR splitting one line could hide a
            # blank line from this count, so blocks that have one take the careful path.)
            if table.num_rows == block.line_count and not block.has_bare_returns:
                first = block.first_line
                return table, np.arange(first, first + block.line_count), []
            lines = block.record_lines()  # blank lines hold no record
            # Still a mismatch: some line did not give exactly one record (a quote swallowed
            # a newline, a bare carriage return split it); find the lines at fault.
            if table.num_rows == len(lines) and not block.has_bare_returns:
                return table, lines, []
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
            pass
        by_value = self._isolate_values(block, clean_ok=False)
        if by_value is not None:
            return by_value
        return self._isolate(split_lines(block.data), block.first_line)

    #: Set while blocks keep having bad values: the next block goes straight to
    #: ``_isolate_values`` (a heuristic shared by the parser threads; a race costs a parse).
    values_first = False

    def _isolate_values(
        self, block: LineBlock, clean_ok: bool
    ) -> tuple[pa.Table, np.ndarray, list[DeadRecord]] | None:
        """A faster way to the same result as ``_isolate`` when only values fail to convert
        (a format may find them column-wise); None when it cannot tell, or when the block
        has no bad value and ``clean_ok`` is false."""
        return None

    def _isolate(
        self, lines: list[bytes], first_line: int
    ) -> tuple[pa.Table, np.ndarray, list[DeadRecord]]:
        """Parse ``lines`` in halves until each bad line is alone; dead-letter those.

        When most lines fail (a column whose type changed after the first block), isolating
        them one by one would take minutes and bury the cause under dead letters: that is a
        ``SourceError`` naming the first failure and suggesting ``types:``.
        """
        tables: list[pa.Table] = []
        ids: list[np.ndarray] = []
        dead: list[DeadRecord] = []
        settled = [0]  # lines found good or bad so far

        def attempt(lo: int, hi: int) -> None:
            data = b"\n".join(lines[lo:hi]) + b"\n"
            error: str | None = None
            piece = LineBlock(data, first_line + lo, 0, 0)
            try:
                table = self.parse(data)
                numbers = piece.record_lines()
                # Lines with a bare carriage return are only trusted one at a time.
                alone_or_plain = hi - lo == 1 or not piece.has_bare_returns
                if table.num_rows == len(numbers) and alone_or_plain and (
                    hi - lo > 1 or self.line_is_whole(lines[lo])
                ):
                    tables.append(table)
                    ids.append(numbers)
                    settled[0] += hi - lo
                    return
                line = lines[lo] if hi - lo == 1 else b""
                error = ("a carriage return inside the line splits it"
                         if b"\r" in line.rstrip(b"\r") else
                         "unbalanced quotes: a quoted value runs past the end of the line")
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
                error = str(exc)
            if hi - lo == 1:
                dead.append(self.bad_line(lines[lo], first_line + lo, error))
                settled[0] += 1
                if len(dead) >= MOSTLY_BAD and len(dead) * 2 > settled[0]:
                    first = dead[0]
                    raise SourceError(
                        f"{self.reader.label}: most lines from line {first.row_id} on fail to "
                        f"parse: {first.message}",
                        hint="the column types come from the first block; declare the right "
                        "ones with `types:` in the source",
                    )
                return
            mid = (lo + hi) // 2
            attempt(lo, mid)
            attempt(mid, hi)

        if lines:
            attempt(0, len(lines))
        tables = [t for t in tables if t.num_rows] or tables[:1]
        table = pa.concat_tables(tables, promote_options="permissive") if tables else \
            self.empty_table()
        row_ids = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
        return table, row_ids, dead

    def line_is_whole(self, line: bytes) -> bool:
        return True

    def empty_table(self) -> pa.Table:
        return empty_table(pa.schema([]))

    def bad_line(self, line: bytes, number: int, error: str) -> DeadRecord:
        if "UTF8" in error or "utf-8" in error:
            kind = "UnicodeDecodeError"
        elif "columns, got" in error:
            kind = "RaggedRow"
        elif "conversion error" in error:
            kind = "ConversionError"
        elif "quote" in error:
            kind = "UnbalancedQuote"
        else:
            kind = "ParseError"
        return DeadRecord({"line": line.decode("utf-8", "replace")}, kind, error, number)
