"""The engine in-process: backpressure, cancellation at many points, ordered concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from headrace.config import load_pipeline
from headrace.engine import Runner, build_plan

from .plugins import PROBE


def make_runner(write, steps: str = "", channel_size: int = 2, delay: float = 0.002,
                batches: int = 50) -> Runner:  # type: ignore[no-untyped-def]
    path: Path = write("p.yaml", f"""
        version: 1
        name: engine
        source: {{use: "tests.plugins:CountingSource", batches: {batches}}}
        steps: [{steps}]
        sink: {{use: "tests.plugins:SlowSink", delay: {delay}}}
        runtime: {{channel_size: {channel_size}, loop: asyncio}}
        """)
    return Runner(build_plan(load_pipeline(path)))


@pytest.mark.parametrize("channel_size", [1, 2, 4])
def test_slow_sink_bounds_batches_in_flight(write, channel_size: int) -> None:
    """With a slow sink, the source is held back: in flight never passes the channel bound."""
    steps = "{use: filter, where: 'id >= 0'}, {use: select, columns: [id]}"
    runner = make_runner(write, steps, channel_size=channel_size, delay=0.02, batches=30)
    result = anyio.run(runner.run, False)
    assert result.status == "ok"
    stages = 2
    # Each edge buffers channel_size; each stage holds its window (2 x concurrency while
    # retries are on: a batch waiting for a retry gives its call slot to the next one); the
    # sink holds one and the source one more.
    bound = (stages + 1) * channel_size + 2 * stages + 2
    assert PROBE["max_in_flight"] <= bound
    assert PROBE["max_in_flight"] >= (stages + 1) * channel_size  # the channels did fill
    assert PROBE["ids"] == list(range(30 * 100))


def test_ordered_concurrency_bounds_in_flight(write) -> None:
    """concurrency: 4 keeps at most 4 batches inside the step and preserves order."""
    runner = make_runner(write, "{use: filter, where: 'id % 2 = 0', concurrency: 4}")
    result = anyio.run(runner.run, False)
    assert result.status == "ok"
    assert PROBE["ids"] == list(range(0, 5000, 2))
    assert result.summary["records_filtered"] == 2500


async def _cancel_after(runner: Runner, ticks: int) -> None:
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, False)
            for _ in range(ticks):
                await anyio.lowlevel.checkpoint()
            scope.cancel()


@pytest.mark.parametrize("ticks", [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 200])
def test_cancellation_at_many_points_leaks_nothing(write, ticks: int) -> None:
    """Cancelled at any tick, the run ends at once, aborts the sink, leaves no task behind."""
    runner = make_runner(write, "{use: select, columns: [id]}", delay=0.001)
    PROBE.clear()

    async def main() -> set[asyncio.Task[object]]:
        with anyio.fail_after(5):
            await _cancel_after(runner, ticks)
        await anyio.lowlevel.checkpoint()
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    leftover = anyio.run(main)
    assert leftover == set()
    if PROBE.get("written") is not None and not PROBE.get("finished"):
        assert PROBE["aborted"] or PROBE["written"] == 0
    # Nothing was published unless the run truly completed.
    assert not (PROBE.get("finished") and PROBE.get("aborted"))


def test_sink_failure_cancels_siblings_and_reports(write) -> None:
    """A sink that raises fails the run with its message; the source is closed."""
    runner = make_runner(write, "{use: filter, where: 'id >= 0'}")

    async def boom(batch: object) -> None:
        raise OSError(28, "No space left on device")

    runner.plan.sink.write = boom  # type: ignore[method-assign]
    result = anyio.run(runner.run, False)
    assert result.status == "failed"
    assert "No space left" in result.summary["error"]
    assert PROBE["source_closed"] is True
    assert PROBE["aborted"] is True


@pytest.mark.parametrize("ticks", [0, 3, 10, 40, 120, 400])
def test_cancelling_a_csv_run_closes_reader_and_parsers(write, tmp_path: Path, ticks: int) -> None:
    """With read-ahead and parser threads busy, cancellation still ends promptly and cleanly."""
    rows = "".join(f"{i},{i % 7},name{i}\n" for i in range(200_000))
    write("in.csv", "id,k,name\n" + rows)
    path = write("p.yaml", """
        version: 1
        name: cancel-csv
        source: {use: csv, path: in.csv, block_size: 65536}
        steps: [{use: filter, where: 'k > 2'}]
        sink: {use: parquet, path: out.parquet}
        runtime: {loop: asyncio}
        """)
    runner = Runner(build_plan(load_pipeline(path)))

    async def main() -> set[asyncio.Task[object]]:
        with anyio.fail_after(10):
            await _cancel_after(runner, ticks)
        await anyio.lowlevel.checkpoint()
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert anyio.run(main) == set()
    source = runner.plan.source
    assert source._parsers is None and source._reader is None  # type: ignore[attr-defined]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_columnar_pipeline_never_builds_python_records(write, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """csv -> filter -> derive -> cast -> rename -> select -> parquet: no dict per record."""
    from headrace.plugin import Batch

    def forbidden(self: Batch) -> list[dict[str, object]]:
        raise AssertionError("a columnar pipeline converted a batch to Python rows")

    monkeypatch.setattr(Batch, "to_rows", forbidden)
    write("in.csv", "id,v,name\n" + "".join(f"{i},{i * 3},n{i}\n" for i in range(5000)))
    path = write("p.yaml", """
        version: 1
        name: columnar
        source: {use: csv, path: in.csv, block_size: 8192}
        steps:
          - {use: filter, where: 'v % 2 = 0'}
          - {use: derive, columns: {w: 'v * 2'}}
          - {use: cast, columns: {w: DOUBLE}}
          - {use: rename, columns: {name: label}}
          - {use: select, columns: [id, w, label]}
        sink: {use: parquet, path: out.parquet}
        runtime: {loop: asyncio}
        """)
    result = anyio.run(Runner(build_plan(load_pipeline(path))).run, False)
    assert result.status == "ok", result.summary
    assert result.summary["records_out"] == 2500
