"""A batch of records: columnar (pyarrow) or rows (list of dicts), converted lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table with no rows. (``Schema.empty_table`` imports pandas: ~200 ms at start-up.)"""
    return pa.Table.from_batches([], schema=schema)


def warm_arrow_conversions() -> None:
    """Pay pyarrow's one-time cost of converting Python objects (it imports pandas, when
    installed, to recognise its types) now; blocking, so call it from a thread."""
    pa.array([0]).to_pylist()


@dataclass(frozen=True)
class Position:
    """Where a batch came from, so dead letters and (later) checkpoints can name it.

    ``start``/``end`` are source offsets (bytes for files, rows for Parquet); ``unit`` says which.
    """

    source: str
    start: int
    end: int
    unit: str = "byte"
    next_row: int | None = None  # the row id the record after this batch will have


@dataclass(frozen=True)
class DeadRecord:
    """One record that could not be processed, with its reason."""

    record: Any
    error: str
    message: str
    row_id: int | None = None  # the record's line (CSV/JSONL) or row number (Parquet)
    attempts: int = 1
    first_at: str | None = None  # wall-clock ISO times of the first and last attempt
    last_at: str | None = None


@dataclass
class Batch:
    """Records moving through the pipeline; build with ``from_arrow`` or ``from_rows``.

    ``row_ids`` numbers each record in its source (a line or row number) while steps keep
    records one-to-one; a step that reshapes the batch drops them.
    """

    _table: pa.Table | None = None
    _rows: list[dict[str, Any]] | None = None
    row_ids: np.ndarray | None = None
    position: Position | None = None
    #: Set by a source: records it could not decode (dead-lettered by the engine).
    rejects: list[DeadRecord] = field(default_factory=list)
    #: Set by a source: index of the first step that processes this batch; the ones before
    #: pass it on as it is (a dead-letter replay re-enters records at the step where they
    #: failed).
    enter_at: int = 0
    #: Source records read before this batch, over this run and those it resumes: a position
    #: every source shares, for steps that keep state (see ``Step.resume_state``). Set by the
    #: engine; what decides checkpoints (counts, memory charge, dead letters) is the engine's
    #: own and never on the batch.
    records_before: int = 0

    @classmethod
    def from_arrow(
        cls,
        data: pa.Table | pa.RecordBatch,
        *,
        row_ids: np.ndarray | None = None,
        position: Position | None = None,
    ) -> Batch:
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        return cls(_table=table, row_ids=row_ids, position=position)

    @classmethod
    def from_rows(
        cls,
        rows: list[dict[str, Any]],
        *,
        row_ids: np.ndarray | None = None,
        position: Position | None = None,
    ) -> Batch:
        return cls(_rows=rows, row_ids=row_ids, position=position)

    @property
    def num_rows(self) -> int:
        if self._table is not None:
            return self._table.num_rows
        assert self._rows is not None
        return len(self._rows)

    @property
    def is_columnar(self) -> bool:
        return self._table is not None

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            assert self._rows is not None
            self._table = pa.Table.from_pylist(self._rows)
        return self._table

    def to_rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            assert self._table is not None
            self._rows = self._table.to_pylist()
        return self._rows

    def derive(
        self,
        *,
        table: pa.Table | None = None,
        rows: list[dict[str, Any]] | None = None,
        row_ids: np.ndarray | None = None,
    ) -> Batch:
        """A new batch from the same position, with new contents."""
        return Batch(_table=table, _rows=rows, row_ids=row_ids, position=self.position,
                     records_before=self.records_before)

    def slice(self, start: int, stop: int) -> Batch:
        ids = self.row_ids[start:stop] if self.row_ids is not None else None
        if self._table is not None:
            return self.derive(table=self._table.slice(start, stop - start), row_ids=ids)
        assert self._rows is not None
        return self.derive(rows=self._rows[start:stop], row_ids=ids)

    def record(self, index: int) -> dict[str, Any]:
        """One record as a dict, without converting the whole batch."""
        if self._rows is not None:
            return self._rows[index]
        assert self._table is not None
        return self._table.slice(index, 1).to_pylist()[0]

    def row_id(self, index: int) -> int | None:
        return int(self.row_ids[index]) if self.row_ids is not None else None

    @staticmethod
    def concat(parts: list[Batch]) -> Batch:
        """Join batches that came from one input batch, keeping their order."""
        # Empty parts may carry the input's schema rather than the output's: leave them out.
        parts = [p for p in parts if p.num_rows] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        position = parts[0].position if parts else None
        has_ids = all(p.row_ids is not None for p in parts)
        ids = np.concatenate([p.row_ids for p in parts]) if has_ids else None
        if all(p.is_columnar for p in parts):
            table = pa.concat_tables([p.to_arrow() for p in parts], promote_options="permissive")
            return Batch(_table=table, row_ids=ids, position=position)
        rows = [r for p in parts for r in p.to_rows()]
        return Batch(_rows=rows, row_ids=ids, position=position)
