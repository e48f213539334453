"""The ``example-sequence`` source: simulated sensor readings, generated deterministically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from headrace.plugin import Batch, Options, PluginContext, Position, Source

SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("sensor", pa.string()),
    ("value", pa.float64()),
    ("at", pa.timestamp("s", tz="UTC")),
])
EPOCH = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / the golden ratio: SplitMix64's increment


class SequenceOptions(Options):
    count: int = Field(default=1000, ge=0, description="How many records to generate.")
    start: int = Field(default=1, ge=0, description="The first record's id; ids count up.")
    seed: int = Field(default=0, ge=0, description="Varies the values: same seed, same records.")
    sensors: list[str] = Field(
        default=["north", "south", "east", "west"], min_length=1,
        description="Sensor names, spread over the records.",
    )
    missing_every: int = Field(
        default=0, ge=0, description="Every Nth record has no value (0: none); try dead letters."
    )
    interval: int = Field(default=60, ge=1, description="Seconds between two readings' `at`.")
    batch_size: int = Field(default=1000, ge=1, le=1_000_000, description="Records per batch.")
    rate: float = Field(
        default=0, ge=0, description="Records per second, like a live feed (0: no waiting)."
    )


class SequenceSource(Source):
    """Record ``n`` (from 0) has id ``start + n``; its values depend on ``seed`` and ``n``
    only, so any run, however it is cut into batches or resumed, yields the same records."""

    summary = "simulated sensor readings (id, sensor, value, at), deterministic and resumable"
    Options: ClassVar[type[SequenceOptions]] = SequenceOptions
    options: SequenceOptions
    example: ClassVar[dict[str, Any] | None] = {"count": 25, "batch_size": 10, "seed": 7}
    resumable = True  # resume() skips to any record

    def __init__(self, options: SequenceOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self._next = 0  # the number of the next record to generate

    def fingerprint(self) -> dict[str, Any] | None:
        # What identifies the input: a resumed run refuses to continue other records. (Not
        # None: the engine keeps checkpoints only for a source with a fingerprint.)
        return self.options.model_dump(exclude={"batch_size", "rate"})

    def resume_token(self, position: Position) -> dict[str, Any]:
        return {"next": position.end}  # JSON, stored in the run's ledger at each checkpoint

    async def resume(self, token: dict[str, Any]) -> None:
        self._next = int(token["next"])

    def peek_schema(self) -> pa.Schema | None:
        return SCHEMA  # lets `headrace validate` check the steps' expressions

    async def batches(self) -> AsyncIterator[Batch]:
        size, rate = self.options.batch_size, self.options.rate
        while self._next < self.options.count and not self.context.stopping:
            first, end = self._next, min(self._next + size, self.options.count)
            # row_ids number the records from 1, like lines: dead letters name them.
            row_ids = np.arange(first + 1, end + 1, dtype=np.int64)
            position = Position("example-sequence", first, end, unit="record",
                                next_row=end + 1)
            yield Batch.from_arrow(self._generate(first, end), row_ids=row_ids,
                                   position=position)
            self._next = end
            if rate:
                await self._pace((end - first) / rate)

    async def _pace(self, seconds: float) -> None:
        """Wait ``seconds`` on the run's clock, a slice at a time: a stop ends the wait."""
        while seconds > 0 and not self.context.stopping:
            await self.context.clock.sleep(min(seconds, 0.25))
            seconds -= 0.25

    def _generate(self, first: int, end: int) -> pa.Table:
        o = self.options
        n = np.arange(first, end, dtype=np.uint64)
        key = _mix(np.array([o.seed % 2**64], dtype=np.uint64))  # seeds far apart
        h = _mix((n + np.uint64(1)) * np.uint64(GOLDEN) ^ key)  # a hash of (seed, n)
        values = np.round((h >> np.uint64(11)).astype(np.float64) / 2.0**53 * 100.0, 2)
        missing = None
        if o.missing_every:
            missing = (n + np.uint64(1)) % np.uint64(o.missing_every) == 0
        sensors = pa.array(o.sensors, pa.string()).take(
            pa.array((h % np.uint64(len(o.sensors))).astype(np.int64)))
        return pa.Table.from_arrays([
            pa.array(n.astype(np.int64) + o.start, pa.int64()),
            sensors,
            pa.array(values, pa.float64(), mask=missing),
            pa.array(EPOCH + n.astype(np.int64) * o.interval, pa.timestamp("s", tz="UTC")),
        ], schema=SCHEMA)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: well-spread 64-bit hashes, vectorised (uint64 wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
