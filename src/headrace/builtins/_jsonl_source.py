"""The ``jsonl`` source: one JSON object per line, parsed by pyarrow in blocks."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.json as pajson

from headrace.plugin import empty_table

from ._linesource import LineSource, LineSourceOptions, Parsed


class JsonlOptions(LineSourceOptions):
    pass


class JsonlSource(LineSource):
    """Reads JSON Lines; a line that is not a JSON object of the expected types is a dead letter."""

    summary = "JSON Lines file or stdin, streamed in blocks; gzip/zstd/bz2 by extension"
    Options: ClassVar[type[JsonlOptions]] = JsonlOptions

    def __init__(self, options: JsonlOptions, context: Any) -> None:
        super().__init__(options, context)
        self.schema: pa.Schema | None = None

    def parse(self, data: bytes, first_line: int) -> Parsed:
        if not data:  # pyarrow refuses empty input; blank lines it skips itself
            return Parsed(self.empty_table(), [])
        parse_options = pajson.ParseOptions(
            explicit_schema=self.schema, unexpected_field_behavior="infer"
        )
        table = pajson.read_json(pa.BufferReader(data), parse_options=parse_options,
                                 read_options=pajson.ReadOptions(use_threads=False))
        if self.schema is None:
            # Later blocks keep the first block's types; columns seen first as all-null stay
            # open to inference.
            self.schema = pa.schema([f for f in table.schema if not pa.types.is_null(f.type)])
        return Parsed(table, [])

    def empty_table(self) -> pa.Table:
        return empty_table(self.schema or pa.schema([]))
