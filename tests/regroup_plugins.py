"""Steps that hold records across batches, for the engine's regrouping tests
(``use: tests.regroup_plugins:SumByKey``)."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

import pyarrow as pa

from headrace.plugin import Batch, Options, Step, StepOutput


class SumByKey(Step):
    """Sums ``value`` per ``key``; emits one record per key after the last batch."""

    summary = "sum of value by key, at the end"
    regroups = True

    def __init__(self, options: Any, context: Any) -> None:
        super().__init__(options, context)
        self.sums: dict[str, int] = {}
        self.seen = 0

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        for key, value in zip(table.column("key").to_pylist(),
                              table.column("value").to_pylist(), strict=True):
            self.sums[key] = self.sums.get(key, 0) + value
        self.seen += table.num_rows
        return StepOutput(batch=batch.slice(0, 0), released=False)

    async def flush(self) -> StepOutput:
        keys = sorted(self.sums)
        out = pa.table({"key": keys, "total": [self.sums[k] for k in keys]})
        return StepOutput(batch=Batch.from_arrow(out), filtered=self.seen - len(keys))


class ChunkOptions(Options):
    rows: int = 250


class Chunks(Step):
    """Passes records on in batches of at least ``rows``, ending at an input boundary."""

    summary = "re-cut batches"
    regroups = True
    Options: ClassVar[type[ChunkOptions]] = ChunkOptions
    options: ChunkOptions

    def __init__(self, options: Any, context: Any) -> None:
        super().__init__(options, context)
        self.pending: list[Batch] = []

    def process(self, batch: Batch) -> StepOutput:
        self.pending.append(batch)
        if sum(b.num_rows for b in self.pending) < self.options.rows:
            return StepOutput(batch=batch.slice(0, 0), released=False)
        return self._emit()

    def _emit(self) -> StepOutput:
        table = pa.concat_tables([b.to_arrow() for b in self.pending])
        self.pending = []
        return StepOutput(batch=Batch.from_arrow(table))

    async def flush(self) -> StepOutput | None:
        return self._emit() if self.pending else None


class FirstSeen(Step):
    """Keeps the first record of each ``key``; remembers keys in ``state_dir`` with the
    source record they were first seen at, so a resumed run forgets only later ones."""

    summary = "first record per key"
    stateful = True

    async def resume_state(self, records: int) -> None:
        self.path = self.context.state_dir / "seen.json"
        seen = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.seen = {k: at for k, at in seen.items() if at < records}

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        keep = []
        for index, key in enumerate(table.column("key").to_pylist()):
            if key not in self.seen:
                self.seen[key] = batch.records_before + index
                keep.append(index)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.seen))
        os.replace(temporary, self.path)
        indices = pa.array(keep, pa.int64())
        ids = batch.row_ids[indices.to_numpy()] if batch.row_ids is not None else None
        return StepOutput(batch.derive(table=table.take(indices), row_ids=ids),
                          filtered=table.num_rows - len(keep))
