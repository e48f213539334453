"""``runtime.memory_budget``: the bytes of batches in flight, bounded by slowing the source.

Each batch is charged its Arrow size when the source hands it over and pays it back when it
leaves the pipeline: written by the sink, or taken in by a regrouping step (whose own state
has its own budget). The charge travels in the batch's span (``_parcel.Span``), which stages
move from input to output, so it is paid back exactly once; a batch bigger than the whole
budget still goes when nothing else is in flight, so a run never deadlocks.
"""

from __future__ import annotations

import anyio

from headrace.plugin import Batch

from ._parcel import Span


def batch_bytes(batch: Batch) -> int:
    """What a batch holds in memory: its Arrow buffers, or an estimate for rows."""
    if batch.is_columnar:
        return int(batch.to_arrow().get_total_buffer_size())
    return 256 * batch.num_rows  # rows of Python dicts: a rough, conservative figure


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self.waits = 0
        self._changed = anyio.Condition()

    async def acquire(self, batch: Batch, span: Span) -> None:
        """Wait until ``batch`` fits; its charge is then carried by ``span``."""
        size = batch_bytes(batch)
        async with self._changed:
            if self.in_flight and self.in_flight + size > self.limit:
                self.waits += 1
                while self.in_flight and self.in_flight + size > self.limit:
                    await self._changed.wait()
            self.in_flight += size
            self.peak = max(self.peak, self.in_flight)
        span.charge = size

    async def release(self, span: Span) -> None:
        """Pay back what ``span`` carries (once: the charge is then zero)."""
        size, span.charge = span.charge, 0
        if size:
            async with self._changed:
                self.in_flight -= size
                self._changed.notify_all()
