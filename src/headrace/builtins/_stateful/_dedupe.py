"""The ``dedupe`` step: the first record of each key goes on, later ones are filtered."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from headrace.config import ByteSize
from headrace.plugin import Batch, DeadRecord, Options, PluginContext, Step, StepOutput

from ._bloom import BloomSeen
from ._keys import check_key_columns, fingerprints, first_occurrences
from ._seen import ExactSeen


class DedupeOptions(Options):
    key: list[str] = Field(min_length=1, description="The columns that make a record's key.")
    mode: Literal["exact", "probabilistic"] = Field(
        default="exact",
        description="exact: every key kept (on disk past `memory`); probabilistic: a Bloom "
        "filter of fixed size, which drops a unique record now and then (a false positive).")
    keep: Literal["first"] = Field(default="first", description="Which record of a key goes on.")
    memory: ByteSize = Field(
        default=64 * 1024**2, gt=0,
        description="exact: bytes of keys (16 each) held in memory before lookups go to the "
        "on-disk index.")
    capacity: int = Field(
        default=10_000_000, gt=0,
        description="probabilistic: distinct keys the filter is sized for.")
    false_positive_rate: float = Field(
        default=0.001, gt=0, lt=1,
        description="probabilistic: chance that a new key looks seen, at `capacity` keys.")


class DedupeStep(Step):
    """Keeps the first record of each key; the keys seen survive ``--resume``."""

    summary = "keep the first record of each key (exact, or a Bloom filter)"
    example = {"key": ["name"]}
    Options: ClassVar[type[DedupeOptions]] = DedupeOptions
    options: DedupeOptions
    stateful = True
    splittable = False  # every call changes the state: never re-run part of a batch
    thread_safe = False

    def __init__(self, options: DedupeOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.store: ExactSeen | BloomSeen | None = None
        self._ready = False
        self._warned = False

    async def open(self) -> None:
        folder = self.context.state_dir
        if self.options.mode == "exact":
            self.store = ExactSeen(folder / "seen.sqlite", self.options.memory)
        else:
            self.store = BloomSeen(folder / "bloom.log", self.options.capacity,
                                   self.options.false_positive_rate)

    async def close(self) -> None:
        if self.store is not None:
            self.store.close()

    async def resume_state(self, records: int) -> None:
        import anyio

        assert self.store is not None
        await anyio.to_thread.run_sync(self.store.forget_from, records)
        self._ready = True

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        if not schema.names:  # nothing to check against (an empty input)
            return schema
        check_key_columns(schema, self.options.key, "key")
        return schema

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        return None if needed is None else needed | frozenset(self.options.key)

    def process(self, batch: Batch) -> StepOutput:
        assert self.store is not None
        if not self._ready:  # not run by the engine (a test): start from nothing
            self.store.forget_from(0)
            self._ready = True
        table = batch.to_arrow()
        missing = [name for name in self.options.key if name not in table.column_names]
        if missing:
            return _all_dead(batch, f"no key column {missing[0]!r} in this record")
        distinct, first = first_occurrences(fingerprints(table, self.options.key))
        if isinstance(self.store, BloomSeen):
            new = ~self.store.contains(distinct, order=first)
        else:
            new = ~self.store.contains(distinct)
        # Each key of the batch counts as first seen where the batch starts: a resume point
        # is always a batch boundary, and this holds after steps that add records too.
        self.store.add(distinct[new], batch.records_before)
        keep = np.sort(first[new])
        ids = batch.row_ids[keep] if batch.row_ids is not None else None
        self._observe()
        return StepOutput(batch.derive(table=table.take(keep), row_ids=ids),
                          filtered=table.num_rows - len(keep))

    def _observe(self) -> None:
        store = self.store
        if isinstance(store, BloomSeen) and store.count > store.capacity and not self._warned:
            self._warned = True
            self.context.logger.warning(
                "step '%s': more than capacity=%d distinct keys: the Bloom filter's false "
                "positive rate is now above %g (raise capacity)", self.context.plugin_id,
                store.capacity, self.options.false_positive_rate)
        if isinstance(store, ExactSeen) and store.spilled and not self._warned:
            self._warned = True
            self.context.logger.info("step '%s': keys exceed memory=%d bytes; looking them "
                                     "up on disk from now on", self.context.plugin_id,
                                     self.options.memory)
            self.context.emit("dedupe_spilled")


def _all_dead(batch: Batch, message: str) -> StepOutput:
    dead = [DeadRecord(record, "MissingColumn", message, batch.row_id(i))
            for i, record in enumerate(batch.to_rows())]
    return StepOutput(batch.slice(0, 0), dead=dead)
