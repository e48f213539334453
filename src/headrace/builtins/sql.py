"""Built-in SQL plugins: the ``sqlite`` and ``postgres`` sources and the ``postgres`` sink.

The postgres classes are loaded on first access (PEP 562 ``__getattr__``), so the sqlite
source, and ``import headrace.builtins.sql``, never import asyncpg (the ``postgres`` extra:
``pip install 'headrace[postgres]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._sql._sqlite_source import SqliteSource

if TYPE_CHECKING:
    from ._sql._pg_sink import PostgresSink
    from ._sql._pg_source import PostgresSource

__all__ = ["PostgresSink", "PostgresSource", "SqliteSource"]


def __getattr__(name: str) -> Any:
    if name == "PostgresSink":
        from ._sql._pg_sink import PostgresSink

        return PostgresSink
    if name == "PostgresSource":
        from ._sql._pg_source import PostgresSource

        return PostgresSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
