"""``ListSource`` and ``ListSink``: records from and into Python lists, for tests.

Both work in a pipeline file (``use: headrace.testing:ListSource``) and directly.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from headrace.plugin import Batch, Options, PluginContext, Position, Sink, Source

_COLLECTED: dict[str, list[dict[str, Any]]] = {}
_LOCK = threading.Lock()


class ListSourceOptions(Options):
    records: list[dict[str, Any]] = Field(description="The records to yield, in order.")
    batch_size: int = Field(default=2, ge=1, description="Records per batch.")


class ListSource(Source):
    """Yields ``records`` in Arrow batches of ``batch_size``; resumable after any batch.

    Column types are inferred once from all the records, so every batch has the same schema.
    Positions count records (``unit="row"``); row ids are the records' indexes.
    """

    summary = "records from a list in the pipeline file (headrace.testing)"
    Options: ClassVar[type[ListSourceOptions]] = ListSourceOptions
    options: ListSourceOptions
    resumable = True
    example: ClassVar[dict[str, Any] | None] = {
        "records": [{"id": 1, "name": "ada"}, {"id": 2, "name": None}, {"id": 3, "name": "cy"},
                    {"id": 4, "name": "di"}, {"id": 5, "name": "ed"}],
        "batch_size": 2,
    }

    def __init__(self, options: ListSourceOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self._next = 0  # index of the next record to yield

    def fingerprint(self) -> dict[str, Any]:
        text = json.dumps(self.options.records, sort_keys=True, default=str)
        return {"records": len(self.options.records),
                "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}

    async def resume(self, token: dict[str, Any]) -> None:
        self._next = int(token["row"])

    def total_size(self) -> int:
        return len(self.options.records)

    def progress(self) -> int:
        return self._next

    async def batches(self) -> AsyncIterator[Batch]:
        records = self.options.records
        if not records:
            return
        table = pa.Table.from_pylist(records)
        size = self.options.batch_size
        while self._next < len(records):
            start = self._next
            stop = min(start + size, len(records))
            self._next = stop
            yield Batch.from_arrow(
                table.slice(start, stop - start),
                row_ids=np.arange(start, stop),
                position=Position("list", start, stop, unit="row", next_row=stop),
            )


class ListSinkOptions(Options):
    name: str = Field(
        default="default",
        description="Key under which the records are kept: read them with "
        "ListSink.collected(name).",
    )


class ListSink(Sink):
    """Appends every record written to a module-level list, ``ListSink.collected(name)``.

    A run builds its own instance, so the records live outside it, under ``name``. A fresh
    run replaces the list when it first writes (or finishes); a resumed run cuts it back to
    its checkpoint and appends: resumable and idempotent, but not atomic (records are visible
    as soon as they are written, and ``abort`` keeps them).
    """

    summary = "records into a Python list, ListSink.collected(name) (headrace.testing)"
    Options: ClassVar[type[ListSinkOptions]] = ListSinkOptions
    options: ListSinkOptions
    resumable = True
    idempotent = True
    example: ClassVar[dict[str, Any] | None] = {"name": "example"}

    def __init__(self, options: ListSinkOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self._fresh = True  # the list still holds a previous run's records

    @staticmethod
    def collected(name: str = "default") -> list[dict[str, Any]]:
        """A copy of the records the sinks named ``name`` wrote ([] if none)."""
        with _LOCK:
            return list(_COLLECTED.get(name, ()))

    @staticmethod
    def clear(name: str | None = None) -> None:
        """Forget the records under ``name``, or under every name."""
        with _LOCK:
            if name is None:
                _COLLECTED.clear()
            else:
                _COLLECTED.pop(name, None)

    def _records(self) -> list[dict[str, Any]]:
        with _LOCK:
            if self._fresh:
                self._fresh = False
                _COLLECTED[self.options.name] = []
            return _COLLECTED.setdefault(self.options.name, [])

    async def write(self, batch: Batch) -> None:
        rows = batch.to_rows()
        records = self._records()
        with _LOCK:
            records.extend(dict(row) for row in rows)

    async def checkpoint(self) -> dict[str, Any]:
        return {"records": len(self._records())}

    async def resume(self, state: dict[str, Any]) -> None:
        keep = int(state.get("records", 0))
        with _LOCK:
            self._fresh = False
            records = _COLLECTED.setdefault(self.options.name, [])
            del records[keep:]  # written after the checkpoint: written again by this run

    async def finish(self) -> None:
        self._records()  # an empty fresh run leaves an empty list

    def describe(self) -> str:
        return f"ListSink({self.options.name!r})"
