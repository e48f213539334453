"""``RecordStep``: third-party steps written one record at a time, sync and async, run by a
real ``headrace run``; every record ends in the sink, filtered, or dead-lettered."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_accounted, read_jsonl, run_cli

STEPS = '''
import anyio
from headrace.plugin import RecordStep


class Grade(RecordStep):
    summary = "grades a score"

    def process_record(self, record):
        if record["score"] is None:
            return None
        if record["score"] < 0:
            raise ValueError(f"negative score {record['score']}")
        return {**record, "grade": "A" if record["score"] >= 90 else "B"}


class SlowGrade(Grade):
    async def process_record_async(self, record):
        await anyio.sleep(0.001)
        return self.process_record(record)
'''
PIPELINE = """\
version: 1
name: record-step
source:
  use: jsonl
  path: in.jsonl
steps:
  - use: grading:{cls}
sink:
  use: jsonl
  path: out/graded.jsonl
runtime:
  max_failures: 10
"""


@pytest.mark.parametrize("cls", ["Grade", "SlowGrade"])
def test_record_step_keeps_filters_and_dead_letters(tmp_path: Path, cls: str) -> None:
    (tmp_path / "grading.py").write_text(STEPS)
    lines = [f'{{"id": {i}, "score": {"null" if s is None else s}}}' for i, s in
             enumerate([95, 10, None, -1, 90, 89] * 50)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "p.yaml").write_text(PIPELINE.format(cls=cls))
    result = run_cli("run", str(tmp_path / "p.yaml"), "--json")
    assert result.code == 1, result.stderr  # 50 dead letters > max_failures
    summary = result.summary
    assert_accounted(summary)
    assert (summary["records_out"], summary["records_filtered"], summary["records_dead"]) == (
        200, 50, 50)
    out = read_jsonl(tmp_path / "out/graded.jsonl")
    assert [r["id"] for r in out] == sorted(r["id"] for r in out)  # order kept
    assert {r["grade"] for r in out if r["score"] >= 90} == {"A"}
    dead = read_jsonl(tmp_path / "out/graded.dead.jsonl")
    assert all(d["error"] == "ValueError" and d["step"] == cls.lower() for d in dead)
    assert dead[0]["message"] == "negative score -1" and dead[0]["record"]["id"] == 3
