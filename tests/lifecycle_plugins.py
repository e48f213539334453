"""Plugins that log every lifecycle call to ``$LIFECYCLE_LOG`` and raise where
``$LIFECYCLE_FAIL`` says (``sink.open``, ``source.close``, ...): for real ``headrace run``
subprocesses (``use: tests.lifecycle_plugins:RecordingSource``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pyarrow as pa

from headrace.plugin import Batch, Options, Position, Sink, Source, Step, StepOutput


def _log(event: str) -> None:
    with Path(os.environ["LIFECYCLE_LOG"]).open("a", encoding="utf-8") as log:
        log.write(event + "\n")
    if event in os.environ.get("LIFECYCLE_FAIL", "").split(","):
        raise RuntimeError(f"boom in {event}")


class SourceOptions(Options):
    batches: int = 3
    delay: float = 0.0


class RecordingSource(Source):
    summary = "numbered records, logging each lifecycle call"
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    options: SourceOptions
    resumable = True

    def fingerprint(self) -> dict[str, Any]:
        return {"batches": self.options.batches}

    async def open(self) -> None:
        _log("source.open")

    async def close(self) -> None:
        _log("source.close")

    async def resume(self, token: dict[str, Any]) -> None:
        _log("source.resume")
        self._first = int(token["offset"])  # the batch after the committed one

    async def batches(self) -> AsyncIterator[Batch]:
        for index in range(getattr(self, "_first", 0), self.options.batches):
            _log("source.read")
            ids = pa.array(range(index * 10, index * 10 + 10), pa.int64())
            yield Batch.from_arrow(pa.table({"id": ids}), row_ids=ids.to_numpy(),
                                   position=Position("rec", index, index + 1, "batch"))
            await anyio.sleep(self.options.delay)


class RecordingStep(Step):
    summary = "passes batches on, logging each lifecycle call"

    async def open(self) -> None:
        _log("step.open")

    async def close(self) -> None:
        _log("step.close")

    def process(self, batch: Batch) -> StepOutput:
        return StepOutput(batch)


class SinkOptions(Options):
    block: float = 0.0


class RecordingSink(Sink):
    summary = "counts records, logging each lifecycle call"
    Options: ClassVar[type[SinkOptions]] = SinkOptions
    options: SinkOptions
    resumable = True

    async def open(self) -> None:
        _log("sink.open")

    async def close(self) -> None:
        _log("sink.close")

    async def write(self, batch: Batch) -> None:
        if self.options.block:
            time.sleep(self.options.block)  # noqa: ASYNC251 - blocks the loop on purpose
        _log("sink.write")

    async def checkpoint(self) -> dict[str, Any]:
        _log("sink.checkpoint")
        return {}

    async def resume(self, state: dict[str, Any]) -> None:
        _log("sink.resume")

    async def finish(self) -> None:
        _log("sink.finish")

    async def abort(self) -> None:
        _log("sink.abort")


class TxOptions(Options):
    path: str


class TransactionalSink(Sink):
    """A 'database' in one JSON file: rows and the engine's checkpoint are replaced together
    (temp file + rename) on every commit, as one transaction would store them."""

    summary = "rows and checkpoints committed together in one JSON file"
    Options: ClassVar[type[TxOptions]] = TxOptions
    options: TxOptions
    resumable = True
    idempotent = True

    async def open(self) -> None:
        self._file = self.context.resolve_path(self.options.path)
        self._pending: list[int] = []
        self._commits = 0

    def _stored(self) -> dict[str, Any]:
        if not self._file.exists():
            return {"rows": [], "checkpoint": None}
        return json.loads(self._file.read_text())  # type: ignore[no-any-return]

    async def write(self, batch: Batch) -> None:
        self._pending.extend(batch.to_arrow().column("id").to_pylist())

    async def commit(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        stored = self._stored()
        state = {"rows": len(stored["rows"]) + len(self._pending)}
        data = {"rows": stored["rows"] + self._pending,
                "checkpoint": {**checkpoint, "sink": state}}
        temporary = self._file.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, self._file)
        self._pending = []
        self._commits += 1
        # $LIFECYCLE_EXIT_AFTER_COMMIT=N: os._exit right after the N-th commit.
        if self._commits == int(os.environ.get("LIFECYCLE_EXIT_AFTER_COMMIT", "0")):
            os._exit(9)  # killed between the sink's commit and the engine's ledger
        return state

    async def checkpoint(self) -> dict[str, Any]:
        return await self.commit({})

    async def stored_checkpoint(self) -> dict[str, Any] | None:
        return self._stored()["checkpoint"]  # type: ignore[no-any-return]

    async def resume(self, state: dict[str, Any]) -> None:
        stored = self._stored()  # rows beyond the checkpoint never committed: nothing to cut
        assert len(stored["rows"]) == state.get("rows", 0), (stored, state)

    async def finish(self) -> None:
        await self.commit({})
