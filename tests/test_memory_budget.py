"""``runtime.memory_budget``: bytes of batches in flight stay under the budget (plus the one
batch a source may hold) by slowing the source; no deadlock when one batch is bigger than the
budget or a regrouping step takes batches in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import assert_accounted, read_jsonl, run_cli

ROOT = Path(__file__).resolve().parent.parent
SLOW = """
import time

def slow(table):
    time.sleep(0.02)
    return table
"""
PIPELINE = """\
version: 1
name: budget
source:
  use: jsonl
  path: in.jsonl
  block_size: 32768
steps:
  - use: python
    function: slowdown:slow
    mode: batch
    format: arrow
    concurrency: 4
{extra}sink:
  use: jsonl
  path: out/o.jsonl
runtime:
  channel_size: 64
  memory_budget: {budget}
"""


def _run(tmp_path: Path, budget: str, extra: str = "") -> dict[str, object]:
    lines = [f'{{"id": {i}, "key": "k{i % 7}", "value": {i % 13}, "pad": "{"x" * 40}"}}'
             for i in range(20_000)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "slowdown.py").write_text(SLOW)
    (tmp_path / "p.yaml").write_text(PIPELINE.format(budget=budget, extra=extra))
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = run_cli("run", str(tmp_path / "p.yaml"), "--json", env=env)
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    return result.summary


def test_bytes_in_flight_stay_under_the_budget(tmp_path: Path) -> None:
    summary = _run(tmp_path, "200KB")
    budget = summary["memory_budget"]
    assert isinstance(budget, dict)
    assert budget["limit"] == 200 * 1024
    assert budget["waits"] > 0  # the source was held back
    assert budget["peak"] <= budget["limit"] + 64 * 1024  # plus at most one batch
    assert len(read_jsonl(tmp_path / "out/o.jsonl")) == 20_000


def test_without_a_budget_the_channels_hold_more(tmp_path: Path) -> None:
    """The same pipeline with a budget far above the input: it never waits, and its peak
    shows what the 200KB budget held back."""
    summary = _run(tmp_path, "1GB")
    budget = summary["memory_budget"]
    assert isinstance(budget, dict)
    assert budget["waits"] == 0 and budget["peak"] > 200 * 1024 + 64 * 1024


@pytest.mark.parametrize("budget", ["1KB", "100KB"])
def test_no_deadlock_with_a_tiny_budget_or_a_regrouping_step(tmp_path: Path,
                                                               budget: str) -> None:
    """A budget smaller than one batch still moves batch by batch; an aggregate that takes
    every batch in pays their bytes back, so the source is not starved."""
    summary = _run(tmp_path, budget, extra="  - use: tests.regroup_plugins:SumByKey\n")
    rows = read_jsonl(tmp_path / "out/o.jsonl")
    assert len(rows) == 7 and sum(int(r["total"]) for r in rows) == sum(  # type: ignore[call-overload]
        i % 13 for i in range(20_000))
    assert summary["records_in"] == 20_000
