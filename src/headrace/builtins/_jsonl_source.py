"""The ``jsonl`` source: one JSON object per line, parsed by pyarrow in blocks."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.json as pajson

from headrace.plugin import empty_table

from ._linesource import LineSource, LineSourceOptions

_WHITESPACE = b" \t\r\n"


def _starts_with_null(data: bytes) -> bool:
    for start in range(0, len(data), 4096):
        head = bytes(data[start: start + 4096]).lstrip(_WHITESPACE)
        if head:
            return head.startswith(b"null")
    return False


class JsonlOptions(LineSourceOptions):
    pass


class JsonlSource(LineSource):
    """Reads JSON Lines; a line that is not a JSON object of the expected types is a dead letter."""

    summary = "JSON Lines file or stdin, streamed in blocks; gzip/zstd/bz2 by extension"
    example = {"path": "data/events.jsonl.gz"}
    Options: ClassVar[type[JsonlOptions]] = JsonlOptions

    def __init__(self, options: JsonlOptions, context: Any) -> None:
        super().__init__(options, context)
        self.schema: pa.Schema | None = None

    def parse(self, data: bytes) -> pa.Table:
        if not data:  # pyarrow refuses empty input; blank lines it skips itself
            return self.empty_table()
        if _starts_with_null(data):
            # pyarrow 26 crashes (SIGSEGV) on input whose first value is a bare `null`; refuse
            # it here, so isolation narrows it down to that line, a dead letter.
            raise pa.ArrowInvalid("JSON line is null, not an object")
        try:
            # pyarrow's JSON reader passes invalid UTF-8 into string columns (a sink then
            # fails on the whole run); refused here, isolation finds the line: a dead letter.
            bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise pa.ArrowInvalid(f"invalid UTF-8 ({exc.reason} at byte {exc.start})") from None
        parse_options = pajson.ParseOptions(
            explicit_schema=self.schema, unexpected_field_behavior="infer"
        )
        table = pajson.read_json(pa.BufferReader(data), parse_options=parse_options,
                                 read_options=pajson.ReadOptions(use_threads=False))
        if self.schema is None:
            # Later blocks keep the first block's types; columns seen first as all-null stay
            # open to inference.
            self.schema = pa.schema([f for f in table.schema if not pa.types.is_null(f.type)])
        return table

    def frozen_types(self) -> pa.Schema | None:
        return self.schema

    def freeze_types(self, schema: pa.Schema) -> None:
        self.schema = schema

    def empty_table(self) -> pa.Table:
        return empty_table(self.schema or pa.schema([]))
