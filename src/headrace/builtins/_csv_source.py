"""The ``csv`` source: pyarrow's multithreaded parser on blocks of whole lines."""

from __future__ import annotations

import csv
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from pydantic import Field, field_validator

from headrace.errors import SourceError
from headrace.plugin import DeadRecord, empty_table

from ._csv_values import bad_values, text_type
from ._lines import LineBlock
from ._linesource import MOSTLY_BAD, LineSource, LineSourceOptions


def arrow_type(name: str) -> pa.DataType:
    """An Arrow type from its name: int64, float64, string, bool, date32, timestamp[s], ..."""
    aliases = {"int": "int64", "integer": "int64", "float": "float64", "double": "float64",
               "str": "string", "text": "string", "boolean": "bool", "date": "date32",
               "timestamp": "timestamp[us]", "datetime": "timestamp[us]"}
    text = aliases.get(name.strip().lower(), name.strip().lower())
    if text.startswith("timestamp[") and text.endswith("]"):
        return pa.timestamp(text[10:-1])
    try:
        return pa.type_for_alias(text)
    except (ValueError, KeyError):
        raise ValueError(f"unknown type '{name}' (e.g. int64, float64, string, bool, "
                         "date32, timestamp[s])") from None


class CsvOptions(LineSourceOptions):
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    quote_char: str = Field(default='"', min_length=1, max_length=1,
                            description="Quote character; values may not span lines.")
    header: bool = Field(default=True, description="The first line names the columns.")
    column_names: list[str] | None = Field(
        default=None,
        description="Column names; replace the header if there is one (default f0, f1, ...).",
    )
    types: dict[str, str] = Field(
        default_factory=dict,
        description="Column types (int64, float64, string, bool, date32, timestamp[s]); others "
        "are inferred from the first block.",
    )
    null_values: list[str] | None = Field(
        default=None, description="Strings read as null (default: pyarrow's list: '', NA, "
        "N/A, NULL, null, NaN, nan, #N/A, ...), in text columns too unless "
        "strings_can_be_null is false."
    )
    strings_can_be_null: bool = Field(
        default=True, description="Text columns read empty fields (and null_values) as null, "
        "as DuckDB, pandas and polars do; false keeps them as text ('')."
    )

    @field_validator("types")
    @classmethod
    def _check_types(cls, value: dict[str, str]) -> dict[str, str]:
        for type_name in value.values():
            arrow_type(type_name)
        return value


def _cast(texts: pa.Table, types: dict[str, pa.DataType],
          converted: dict[str, pa.ChunkedArray], keep: pa.Array) -> pa.Table:
    """The rows ``keep`` of ``texts`` (every column read as text) in ``types``, as the typed
    parse reads them; ``converted`` columns were cast whole already."""
    columns = []
    for name in texts.column_names:
        if name in converted:
            columns.append(converted[name].filter(keep))
        elif text_type(types.get(name, pa.string())):
            columns.append(texts.column(name).filter(keep))
        else:
            columns.append(texts.column(name).filter(keep).cast(types[name]))
    return pa.table(columns, names=texts.column_names)


class CsvSource(LineSource):
    """Reads a CSV file (or stdin) in blocks; malformed rows go to the dead-letter output."""

    summary = "CSV file or stdin, streamed in blocks; gzip/zstd/bz2 by extension"
    example = {"path": "data/flights.csv", "types": {"dep_delay": "float64"}}
    Options: ClassVar[type[CsvOptions]] = CsvOptions
    options: CsvOptions

    def __init__(self, options: CsvOptions, context: Any) -> None:
        super().__init__(options, context)
        self.names: list[str] = list(options.column_names or [])
        self.types: dict[str, pa.DataType] = {k: arrow_type(v) for k, v in options.types.items()}
        self._inferred = False
        self.include: list[str] | None = None

    def _parse_header(self, line: bytes) -> list[str]:
        text = line.decode("utf-8-sig", "replace").rstrip("\r")
        row = next(csv.reader([text], delimiter=self.options.delimiter,
                              quotechar=self.options.quote_char), [])
        if not row:
            raise SourceError(f"{self.reader.label}:1: empty header line")
        return row

    def prepare(self) -> None:
        if self.options.header:
            line = self.reader.read_line()
            if line is None:
                raise SourceError(f"{self.reader.label}: empty file (no header line)")
            header = self._parse_header(line)
            self.names = list(self.options.column_names or header)

    def parse(self, data: bytes) -> pa.Table:
        # No invalid_row_handler: a ragged row makes the block fail and the engine isolates
        # the line (pyarrow's handler cannot even be called for a row with invalid UTF-8).
        if not self.names:
            first = data.split(b"\n", 1)[0].rstrip(b"\r")
            count = len(next(csv.reader([first.decode("utf-8", "replace")],
                                        delimiter=self.options.delimiter), []))
            self.names = [f"f{i}" for i in range(count)]
        if not data:  # pyarrow refuses empty input; blank lines it skips itself
            return self.empty_table()
        table = self._read(data, self._convert_options())
        if not self._inferred:
            self._freeze_types(table.schema)
            if any(self.types[f.name] != f.type for f in table.schema):
                return self.parse(data)  # again, with the frozen types
        return table

    def _read(self, data: bytes, convert: pacsv.ConvertOptions) -> pa.Table:
        return pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=self.names, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=self.options.delimiter, quote_char=self.options.quote_char
            ),
            convert_options=convert,
        )

    def _isolate_values(
        self, block: LineBlock, clean_ok: bool
    ) -> tuple[pa.Table, np.ndarray, list[DeadRecord]] | None:
        """Bad values found column-wise (``_csv_values``); None sends the block to
        line-by-line isolation (ragged rows, quotes, invalid UTF-8, an unsure screen). Before
        the first block fixed the types, only declared ``types`` are screened; the good
        lines' parse then infers the rest (or fails, and the block goes line by line)."""
        if block.has_bare_returns or not block.data:
            return None
        names = self.include if self.include is not None else self.names
        try:
            texts = self._read(block.data, self._convert_options(
                types={n: pa.string() for n in names}, strings_can_be_null=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
            return None
        lines, starts, ends = block.record_spans()
        if texts.num_rows != len(lines):
            return None
        screened = bad_values(texts, self.types)
        if screened is None:
            return None
        bad, converted = screened
        self.values_first = bool(bad)
        cast_texts = self._inferred and self.options.strings_can_be_null
        if not (bad or (clean_ok and cast_texts)):
            return None
        # pyarrow's own words for the line parsed alone (tests/test_csv_values.py)
        prefix = {name: f"In CSV column #{self.names.index(name)}: Row #1: CSV conversion "
                  f"error to {self.types[name]}: invalid value '"
                  for name in {name for name, _ in bad.values()}}
        data = block.data
        dead = [DeadRecord({"line": data[starts[row]:ends[row]].decode("utf-8", "replace")},
                           "ConversionError", f"{prefix[name]}{value}'", int(lines[row]))
                for row, (name, value) in sorted(bad.items())]
        keep = np.ones(len(lines), dtype=bool)
        if bad:
            keep[list(bad)] = False
        good = lines[keep]
        if len(dead) >= MOSTLY_BAD and len(dead) * 2 > len(lines):
            return None  # line by line reports it as a type problem of the whole column
        if not len(good):
            return self.empty_table(), good, dead
        try:  # pyarrow judges: the screen may have let a value through it refuses
            if cast_texts:
                table = _cast(texts, self.types, converted, pa.array(keep))
            else:  # text read as the option says, and types still to infer: parse again
                table = self.parse(b"\n".join(data[starts[i]:ends[i]]
                                              for i in np.flatnonzero(keep)) + b"\n")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                UnicodeDecodeError):
            return None
        return (table, good, dead) if table.num_rows == len(good) else None

    def project(self, columns: list[str]) -> bool:
        self.include = columns
        return True

    def _convert_options(self, types: dict[str, pa.DataType] | None = None,
                         strings_can_be_null: bool | None = None) -> pacsv.ConvertOptions:
        if strings_can_be_null is None:
            strings_can_be_null = self.options.strings_can_be_null
        kwargs: dict[str, Any] = {"column_types": self.types if types is None else types,
                                  "strings_can_be_null": strings_can_be_null}
        if self.include is not None:
            kwargs["include_columns"] = self.include
        if self.options.null_values is not None:
            kwargs["null_values"] = self.options.null_values
        return pacsv.ConvertOptions(**kwargs)

    def frozen_types(self) -> pa.Schema | None:
        return pa.schema(list(self.types.items())) if self._inferred else None

    def freeze_types(self, schema: pa.Schema) -> None:
        self.types = {field.name: field.type for field in schema}
        self._inferred = True

    def _freeze_types(self, schema: pa.Schema) -> None:
        """Later blocks are parsed with the first block's types, so every batch agrees."""
        for field in schema:
            if field.name not in self.types:
                # All-null columns and text with invalid UTF-8 are read as strings; the bad
                # rows then fail conversion and become dead letters.
                loose = pa.types.is_null(field.type) or pa.types.is_binary(field.type)
                self.types[field.name] = pa.string() if loose else field.type
        self._inferred = True

    def line_is_whole(self, line: bytes) -> bool:
        """A single line with an odd number of quotes has a value running past its end."""
        return line.count(self.options.quote_char.encode()) % 2 == 0

    def empty_table(self) -> pa.Table:
        names = self.include if self.include is not None else self.names
        return empty_table(pa.schema([(n, self.types.get(n, pa.string())) for n in names]))
