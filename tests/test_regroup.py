"""Steps that hold records across batches (``regroups``) or learn from them (``stateful``),
in real ``headrace run`` subprocesses: accounting holds, and SIGKILL + ``--resume`` at
several moments gives the uninterrupted run's output (none lost, none repeated)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import HEADRACE, assert_accounted, read_jsonl, run_cli

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 20_000
SLOW = """
import time

def slow(table):
    time.sleep(table.num_rows * 100e-6)  # ~2 s for the input: kills land mid-run
    return table
"""
PIPELINE = """\
version: 1
name: regroup
source:
  use: jsonl
  path: in.jsonl
  block_size: 16384
steps:
  - use: python
    function: slowdown:slow
    mode: batch
    format: arrow
  - use: tests.regroup_plugins:{step}
sink:
  use: jsonl
  path: out/o.jsonl
runtime:
  checkpoint_interval: 1ms
"""


def _folder(tmp_path: Path, step: str) -> tuple[Path, dict[str, str]]:
    rng = random.Random(7)
    lines = [json.dumps({"id": i, "key": f"k{rng.randrange(50)}", "value": rng.randrange(100)})
             for i in range(RECORDS)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "slowdown.py").write_text(SLOW)
    (tmp_path / "p.yaml").write_text(PIPELINE.format(step=step))
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return tmp_path / "p.yaml", env


def _expected(tmp_path: Path, step: str) -> list[dict[str, object]]:
    rows = read_jsonl(tmp_path / "in.jsonl")
    if step == "SumByKey":
        sums: dict[str, int] = {}
        for row in rows:
            sums[str(row["key"])] = sums.get(str(row["key"]), 0) + int(row["value"])  # type: ignore[call-overload]
        return [{"key": k, "total": sums[k]} for k in sorted(sums)]
    if step == "FirstSeen":
        first: dict[object, dict[str, object]] = {}
        for row in rows:
            first.setdefault(row["key"], row)
        return sorted(first.values(), key=lambda r: int(r["id"]))  # type: ignore[call-overload]
    return rows


@pytest.mark.parametrize("step", ["SumByKey", "Chunks", "FirstSeen"])
def test_uninterrupted_output_and_accounting(tmp_path: Path, step: str) -> None:
    pipeline, env = _folder(tmp_path, step)
    result = run_cli("run", str(pipeline), "--json", env=env)
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    assert read_jsonl(tmp_path / "out/o.jsonl") == _expected(tmp_path, step)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["SumByKey", "Chunks", "FirstSeen"])
def test_sigkill_and_resume(tmp_path: Path, step: str) -> None:
    """Killed at three moments, resumed each time: the output is the uninterrupted one."""
    pipeline, env = _folder(tmp_path, step)
    full_env = {**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull, **env}
    rng = random.Random(step)
    resume: list[str] = []
    for _ in range(3):
        proc = subprocess.Popen([*HEADRACE, "run", str(pipeline), *resume],
                                env=full_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.4, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        resume = ["--resume"]
    final = run_cli("run", str(pipeline), "--resume", "--json", env=env, timeout=180)
    if final.code == 2 and "nothing to resume" in final.stderr:  # the last kill came late
        final = run_cli("run", str(pipeline), "--json", env=env)
    assert final.code == 0, final.stderr
    assert read_jsonl(tmp_path / "out/o.jsonl") == _expected(tmp_path, step)
