"""Cancellation of a checkpointed run with retries at many points: start-up, steady state,
during backoff, during sink commits, during a drain. Every time the run ends promptly, no
task is left, and the checkpoint is consistent: a resumed run completes the output with
every record exactly once (in the sink or the dead letters)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from headrace.config import load_pipeline
from headrace.engine import Runner, build_plan

FLAKY = """
import random
from headrace.plugin import TransientError

async def flaky(record):
    if random.random() < 0.3:
        raise TransientError("try again")
    return record
"""
N = 6000


def _pipeline(write) -> Path:  # type: ignore[no-untyped-def]
    write("in.csv", "id,v\n" + "".join(f"{i},{i % 13}\n" for i in range(N)))
    write("flakyfn.py", FLAKY)
    return write("p.yaml", """
        version: 1
        name: cancel-resume
        source: {use: csv, path: in.csv, block_size: 4096}
        steps:
          - use: python
            function: "flakyfn:flaky"
            retry: {attempts: 6, base: 1ms, cap: 5ms}
        sink: {use: jsonl, path: out/o.jsonl}
        runtime: {loop: asyncio, checkpoint_interval: 1ms, max_failures: 100%}
        """)


def _leftover_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def _run_then_cancel(runner: Runner, when: float, drain_first: bool) -> set[object]:
    """Cancel after ``when``: an int is a count of event-loop ticks (start-up), a float a
    number of seconds (steady state: retries back off, the sink commits every millisecond)."""
    with anyio.fail_after(10):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, False)
                if isinstance(when, int):
                    for _ in range(when):
                        await anyio.lowlevel.checkpoint()
                else:
                    if drain_first:
                        await anyio.sleep(when / 2)
                        runner.stop.request("SIGINT")  # a graceful stop, then cancelled
                    await anyio.sleep(when / 2 if drain_first else when)
                scope.cancel()
    await anyio.lowlevel.checkpoint()
    return set(_leftover_tasks())


def _ids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line]


def _dead_ids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["record"]["id"] for line in path.read_text().splitlines() if line]


@pytest.mark.parametrize(("when", "drain_first"), [
    (0, False), (4, False), (30, False), (400, False), (3000, False),
    (0.3, False), (0.6, False), (0.9, False), (1.3, False), (1.8, False),
    (0.6, True), (1.0, True), (1.6, True),
])
def test_cancelled_anywhere_then_resumed_loses_and_duplicates_nothing(
    write, when: float, drain_first: bool
) -> None:  # type: ignore[no-untyped-def]
    path = _pipeline(write)
    runner = Runner(build_plan(load_pipeline(path)))
    assert anyio.run(_run_then_cancel, runner, when, drain_first) == set()
    out = path.parent / "out"
    if not (out / "o.jsonl").exists():  # not finished before the cancel: resume it
        resumed = Runner(build_plan(load_pipeline(path)), resume=True)
        result = anyio.run(resumed.run, False)
        assert result.status == "ok", result.summary
    ids = _ids(out / "o.jsonl") + _dead_ids(out / "o.dead.jsonl")
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert sorted(ids) == list(range(N)), "a record was lost"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
