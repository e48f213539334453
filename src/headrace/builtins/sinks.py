"""Built-in sinks."""

from ._sinks import CsvSink, JsonlSink, ParquetSink, StdoutSink
from ._sqlite_sink import SqliteSink

__all__ = ["CsvSink", "JsonlSink", "ParquetSink", "SqliteSink", "StdoutSink"]
