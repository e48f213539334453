"""``aggregate``'s per-group state: partial aggregates folded batch by batch, merged, and
spilled to disk by hash partition when they outgrow the memory budget.

Tables here have the group keys as ``k0, k1, ...``, the partial states as ``p0, p1, ...``
(main table) and, in a side table (an exact float sum or a quantile sketch), ``b`` and
``n``. Arrow's hash group-by does the folding and merging; nulls in a key make a group of their own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from headrace.plugin import SqlEvaluator

PARTITIONS = 16
_MERGE_ROWS = 65_536  # partial rows gathered before they are merged into the state
_HASH = SqlEvaluator("aggregate partitions")


def merge_main(tables: list[pa.Table], keys: list[str], merges: list[str]) -> pa.Table:
    """Partial tables -> one row per group, each ``p<i>`` merged with ``merges[i]``."""
    table = _concat(tables)
    aggregates = [(f"p{i}", fn) for i, fn in enumerate(merges)]
    merged = table.group_by(keys, use_threads=False).aggregate(aggregates)
    return pa.table([*(merged.column(k) for k in keys),
                     *(merged.column(f"p{i}_{fn}") for i, fn in enumerate(merges))],
                    names=[*keys, *(f"p{i}" for i in range(len(merges)))])


def merge_side(tables: list[pa.Table], keys: list[str]) -> pa.Table:
    table = _concat(tables)
    merged = table.group_by([*keys, "b"], use_threads=False).aggregate([("n", "sum")])
    return pa.table([*(merged.column(k) for k in [*keys, "b"]), merged.column("n_sum")],
                    names=[*keys, "b", "n"])


def _concat(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def partition_of(table: pa.Table, keys: list[str]) -> pa.Array:
    """Each row's partition, from a hash of its group keys."""
    columns = ", ".join(f'"{k}"' for k in keys)
    result = _HASH.select(table.select(keys), f"CAST(hash({columns}) % {PARTITIONS} AS INT32)")
    return result.column(0).combine_chunks()


class GroupState:
    """The main partial table and the side tables, with the partials
    not merged yet; ``spill`` writes them out by partition, ``merged`` reads them back."""

    def __init__(self, keys: list[str], merges: list[str], sides: int,
                 folder: Callable[[], Path]) -> None:
        self.keys = keys
        self.merges = merges
        self.main: list[pa.Table] = []  # [merged state, pending partials...]
        self.sides: list[list[pa.Table]] = [[] for _ in range(sides)]
        self._folder = folder
        self._pending_rows = 0
        self._state_rows = 0
        self.spills = 0

    @property
    def nbytes(self) -> int:
        tables = itertools.chain(self.main, *self.sides)
        return sum(t.nbytes for t in tables)

    def add(self, main: pa.Table, sides: list[pa.Table]) -> None:
        self.main.append(main)
        for held, side in zip(self.sides, sides, strict=True):
            held.append(side)
        self._pending_rows += main.num_rows + sum(t.num_rows for t in sides)
        if self._pending_rows >= max(self._state_rows, _MERGE_ROWS):
            self.merge()

    def merge(self) -> None:
        if len(self.main) > 1:
            self.main = [merge_main(self.main, self.keys, self.merges)]
        for index, held in enumerate(self.sides):
            if len(held) > 1:
                self.sides[index] = [merge_side(held, self.keys)]
        self._state_rows = sum(t[0].num_rows for t in (self.main, *self.sides) if t)
        self._pending_rows = 0

    def spill(self) -> None:
        """Write the state by partition to the scratch folder and start empty."""
        self.merge()
        folder = self._folder()
        for name, tables in (("main", self.main),
                             *((f"side{i}", held) for i, held in enumerate(self.sides))):
            if not tables:
                continue
            table = tables[0]
            parts = partition_of(table, self.keys)
            for part in range(PARTITIONS):
                rows = table.filter(pc.equal(parts, part))
                if rows.num_rows:
                    path = folder / f"{name}-{part:02d}-{self.spills:06d}.arrow"
                    with ipc.new_file(path, rows.schema) as writer:
                        writer.write_table(rows)
        self.spills += 1
        self.main = []
        self.sides = [[] for _ in self.sides]
        self._state_rows = self._pending_rows = 0

    def merged(self) -> Iterator[tuple[pa.Table, list[pa.Table]]]:
        """The merged state, one partition at a time when it was spilled."""
        if not self.spills:
            self.merge()
            if self.main:
                yield self.main[0], [held[0] for held in self.sides]
            return
        if self.main:
            self.spill()
        folder = self._folder()
        for part in range(PARTITIONS):
            main = _read(sorted(folder.glob(f"main-{part:02d}-*.arrow")))
            if main is None:
                continue
            sides = [_read(sorted(folder.glob(f"side{i}-{part:02d}-*.arrow")))
                        for i in range(len(self.sides))]
            yield (merge_main([main], self.keys, self.merges),
                   [merge_side([s], self.keys) for s in sides if s is not None])


def _read(paths: list[Path]) -> pa.Table | None:
    tables = []
    for path in paths:
        with ipc.open_file(path) as reader:
            tables.append(reader.read_all())
    return pa.concat_tables(tables) if tables else None
