"""Every example under examples/ runs and accounts for every record."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from headrace.sampledata import write_flights_csv

from .conftest import assert_accounted, run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PIPELINES = sorted(p for p in EXAMPLES.glob("*/pipeline.*") if p.suffix in {".yaml", ".toml"})


def test_there_are_examples() -> None:
    """The examples folder is not empty (the parametrized test below would pass vacuously)."""
    assert len(PIPELINES) >= 3


@pytest.mark.parametrize("pipeline", PIPELINES, ids=[p.parent.name for p in PIPELINES])
def test_example_runs(pipeline: Path, tmp_path: Path) -> None:
    """Copied to a temp folder (examples stay clean), each example runs with exit 0."""
    work = tmp_path / pipeline.parent.name
    shutil.copytree(pipeline.parent, work, ignore=shutil.ignore_patterns("out", ".headrace"))
    env = {}
    if pipeline.parent.name == "flights":  # its data is generated, not committed
        data = tmp_path / "flights.csv"
        write_flights_csv(data, rows=50_000)
        env["FLIGHTS_CSV"] = str(data)
    result = run_cli("run", str(work / pipeline.name), "--json", env=env)
    assert result.code == 0, result.stderr
    summary = result.summary
    assert summary["status"] == "ok"
    assert summary["records_out"] > 0
    assert_accounted(summary)
