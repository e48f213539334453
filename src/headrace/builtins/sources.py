"""Built-in sources."""

from ._csv_source import CsvSource
from ._jsonl_source import JsonlSource
from ._parquet_source import ParquetSource

__all__ = ["CsvSource", "JsonlSource", "ParquetSource"]
