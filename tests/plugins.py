"""Plugins for engine tests, loaded by import path (``use: tests.plugins:CountingSource``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
import numpy as np
import pyarrow as pa

from headrace.plugin import Batch, Options, Position, Sink, Source

# Module-level probes: tests read them after an in-process run.
PROBE: dict[str, Any] = {}


class CountingOptions(Options):
    batches: int = 50
    rows: int = 100


class CountingSource(Source):
    """Yields numbered batches and records how many it has handed over."""

    Options: ClassVar[type[CountingOptions]] = CountingOptions
    options: CountingOptions

    async def batches(self) -> AsyncIterator[Batch]:
        PROBE["yielded"] = 0
        PROBE["max_in_flight"] = 0
        for b in range(self.options.batches):
            start = b * self.options.rows
            ids = np.arange(start, start + self.options.rows)
            PROBE["yielded"] += 1
            in_flight = PROBE["yielded"] - PROBE.get("written", 0)
            PROBE["max_in_flight"] = max(PROBE["max_in_flight"], in_flight)
            yield Batch.from_arrow(pa.table({"id": ids}), row_ids=ids,
                                   position=Position("counting", start, start + len(ids), "row"))

    async def close(self) -> None:
        PROBE["source_closed"] = True


class SlowOptions(Options):
    delay: float = 0.01


class SlowSink(Sink):
    """Sleeps per batch; remembers what it received and whether it published or aborted."""

    Options: ClassVar[type[SlowOptions]] = SlowOptions
    options: SlowOptions

    async def open(self) -> None:
        PROBE["written"] = 0
        PROBE["ids"] = []
        PROBE["finished"] = False
        PROBE["aborted"] = False

    async def write(self, batch: Batch) -> None:
        await anyio.sleep(self.options.delay)
        PROBE["ids"].extend(batch.to_arrow().column("id").to_pylist())
        PROBE["written"] += 1

    async def finish(self) -> None:
        PROBE["finished"] = True

    async def abort(self) -> None:
        PROBE["aborted"] = True
