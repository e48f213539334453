"""Built-in sinks."""

from ._sinks import CsvSink, JsonlSink, ParquetSink, StdoutSink

__all__ = ["CsvSink", "JsonlSink", "ParquetSink", "StdoutSink"]
