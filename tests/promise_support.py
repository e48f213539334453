"""Python-step functions and plugins for ``tests/test_promise_paths.py``, named by import path
(``function: tests.promise_support:slow``, ``use: tests.promise_support:HoldAll``).

The functions take their settings from the environment, which is not part of the pipeline's
hash: a resumed run may go fast where the interrupted one went slowly.

- ``PROMISE_SLEEP``: seconds a call of ``slow`` sleeps (default 0.05).
- ``PROMISE_PROGRESS``: a file ``slow`` appends each batch's record count to, one a line,
  so a test can send its signal once the run has got somewhere.
- ``PROMISE_MARKER``: a file ``hang`` creates when it starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from headrace.builtins._file_sink import FileSinkOptions
from headrace.builtins.sinks import JsonlSink
from headrace.plugin import Batch, Options, Step, StepOutput, TransientError

# -- python-step functions (mode: batch, format: arrow) -------------------------------------


def slow(table: pa.Table) -> pa.Table:
    """Sleeps ``PROMISE_SLEEP`` seconds a batch with records, then notes its progress."""
    time.sleep(float(os.environ.get("PROMISE_SLEEP", "0.05")))
    progress = os.environ.get("PROMISE_PROGRESS")
    if progress:
        with open(progress, "a", encoding="utf-8") as handle:
            handle.write(f"{table.num_rows}\n")
    return table


def progress_of(path: Path) -> int:
    """Records ``slow`` has passed on, from its progress file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    return sum(int(line) for line in text.splitlines() if line.strip())


def hang(table: pa.Table) -> pa.Table:
    """A call that does not return for a minute (a stuck function)."""
    Path(os.environ["PROMISE_MARKER"]).write_text("started", encoding="utf-8")
    time.sleep(60)
    return table


def fail_at_1000(record: dict[str, Any]) -> dict[str, Any]:
    """Raises for the record with id 1000 (with ``on_error: fail`` the run fails there)."""
    if record["id"] == 1000:
        raise ValueError("id 1000 is poison")
    return record


def drop_group_column(table: pa.Table) -> pa.Table:
    """Batches with an ``id`` of 1000 or more lose their ``g`` column: an aggregate grouping
    by ``g`` dead-letters them whole (``MissingColumn``)."""
    if table.num_rows and pc.max(table.column("id")).as_py() >= 1000:
        return table.drop_columns(["g"])
    return table


# -- steps ----------------------------------------------------------------------------------


class HoldAllOptions(Options):
    fail_id: int = Field(default=-1, description="A batch holding this id fails every call.")
    ids_file: str = Field(default="", description="Where the failing batch's ids are noted.")
    flush_marker: str = Field(default="", description="A file flush() creates.")


class HoldAll(Step):
    """Holds every record until the end, then emits them all in order (a regrouping step
    that never releases early). A batch holding ``fail_id`` raises a transient error on
    every attempt, after noting its ids (one a line) in ``ids_file``."""

    summary = "hold everything until flush"
    regroups = True
    thread_safe = False
    Options: ClassVar[type[HoldAllOptions]] = HoldAllOptions
    options: HoldAllOptions

    def __init__(self, options: Any, context: Any) -> None:
        super().__init__(options, context)
        self.tables: list[pa.Table] = []

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        ids = table.column("id").to_pylist()
        if self.options.fail_id in ids:
            Path(self.options.ids_file).write_text("".join(f"{i}\n" for i in ids))
            raise TransientError("the service is down")
        self.tables.append(table)
        return StepOutput(batch=batch.slice(0, 0), released=False)

    async def flush(self) -> StepOutput | None:
        if self.options.flush_marker:
            await anyio.Path(self.options.flush_marker).write_text("flushed")
        if not self.tables:
            return None
        return StepOutput(batch=Batch.from_arrow(pa.concat_tables(self.tables)))


class Tag(Step):
    """Adds a column, building its output with ``batch.derive`` as docs/plugins.md shows."""

    summary = "add a tag column"

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        tagged = table.append_column("tag", pa.array(["t"] * table.num_rows))
        return StepOutput(batch.derive(table=tagged, row_ids=batch.row_ids))


class PassOn(Step):
    """A regrouping step that passes every batch on at once, built with ``batch.derive``."""

    summary = "pass batches on (regrouping)"
    regroups = True
    thread_safe = False

    def process(self, batch: Batch) -> StepOutput:
        return StepOutput(batch=batch.derive(table=batch.to_arrow(), row_ids=batch.row_ids))


# -- sinks ----------------------------------------------------------------------------------


class SlowFinishOptions(FileSinkOptions):
    finish_delay: float = Field(default=0.0, description="Seconds finish() waits first.")
    fail_marker: str = Field(default="", description="finish() fails while this file is "
                             "absent (and creates it): the first publication fails.")


class SlowFinishJsonl(JsonlSink):
    """The jsonl sink, with a slow (or once failing) publication."""

    summary = "jsonl, slow to publish"
    Options: ClassVar[type[SlowFinishOptions]] = SlowFinishOptions  # type: ignore[assignment]
    options: SlowFinishOptions

    async def finish(self) -> None:
        await anyio.sleep(self.options.finish_delay)
        marker = self.options.fail_marker
        if marker and await anyio.to_thread.run_sync(_first_time, Path(marker)):
            raise RuntimeError("the disk went away while publishing")
        await super().finish()


def _first_time(marker: Path) -> bool:
    """True the first time (and creates ``marker``), False after."""
    if marker.exists():
        return False
    marker.write_text("failed once", encoding="utf-8")
    return True


def flaky_batches(table: pa.Table) -> pa.Table:
    """Raises ``ConnectionError`` on the first call for each batch in this process (its first
    id names it), then passes the batch on: a transient failure the step's retry absorbs."""
    first = table.column("id")[0].as_py() if table.num_rows else None
    if first is not None and first not in _FAILED_ONCE:
        _FAILED_ONCE.add(first)
        raise ConnectionError(f"connection reset at batch {first}")
    return table


def always_down(table: pa.Table) -> pa.Table:
    """Every call fails with a transient error (a service that stays down)."""
    raise ConnectionError("connection refused")


_FAILED_ONCE: set[Any] = set()



class JudgeAtEnd(Step):
    """Holds every record; at the end passes on those with an even id and dead-letters those
    with an odd one (dead letters that only ``flush`` makes)."""

    summary = "hold, then judge at the end"
    regroups = True
    thread_safe = False

    def __init__(self, options: Any, context: Any) -> None:
        super().__init__(options, context)
        self.rows: list[dict[str, Any]] = []

    def process(self, batch: Batch) -> StepOutput:
        self.rows += batch.to_rows()
        return StepOutput(batch=batch.slice(0, 0), released=False)

    async def flush(self) -> StepOutput | None:
        from headrace.plugin import DeadRecord

        dead = [DeadRecord(row, "OddId", f"id {row['id']} is odd") for row in self.rows
                if row["id"] % 2]
        return StepOutput(batch=Batch.from_rows([r for r in self.rows if not r["id"] % 2]),
                          dead=dead)
