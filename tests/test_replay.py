"""``headrace dlq replay``: dead letters re-enter at the step where they failed."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import read_jsonl, run_cli

FN = """
import os
def double(r):
    if r["v"] % 7 == 0 and not os.environ.get("HEADRACE_TEST_FIXED"):
        raise ValueError(f"no sevens: {r['v']}")
    return {**r, "w": r["v"] * 2}
"""


def _pipeline(write) -> Path:  # type: ignore[no-untyped-def]
    write("in.csv", "id,v\n" + "".join(f"{i},{i * 3}\n" for i in range(1, 51)) + "51,oops\n")
    write("fn.py", FN)
    return write("p.yaml", """
        version: 1
        name: rp
        source: {use: csv, path: in.csv}
        steps:
          - {use: cast, columns: {v: int64}}
          - {use: python, function: "fn:double", id: double}
          - {use: filter, where: "v > 10"}
        sink: {use: jsonl, path: out/o.jsonl}
        runtime: {max_failures: 100}
        """)


def test_replay_re_enters_at_the_failed_step(write) -> None:  # type: ignore[no-untyped-def]
    path = _pipeline(write)
    assert run_cli("run", str(path)).code == 0
    out = path.parent / "out"
    dead = out / "o.dead.jsonl"
    letters = read_jsonl(dead)
    assert {(d["step"], d["attempts"]) for d in letters} == {("double", 1), ("cast", 1)}
    assert all(d["pipeline"] == "rp" and len(d["pipeline_hash"]) == 16 for d in letters)
    original = read_jsonl(out / "o.jsonl")

    result = run_cli("dlq", "replay", str(dead), "--pipeline", str(path), "--json",
                     env={"HEADRACE_TEST_FIXED": "1"})
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["replayed"] == 8 and summary["records_in"] == 8
    replayed = read_jsonl(out / "o.replay.jsonl")
    # The seven records the function refused now pass; they skipped the cast (already done).
    assert [r["id"] for r in replayed] == [7, 14, 21, 28, 35, 42, 49]
    assert all(r["w"] == r["v"] * 2 for r in replayed)
    # The record that failed the cast fails it again, into a new dead-letter file.
    again = read_jsonl(out / "o.dead.replay.jsonl")
    assert [d["record"]["id"] for d in again] == [51]
    # The original output and dead letters are untouched.
    assert read_jsonl(out / "o.jsonl") == original
    assert read_jsonl(dead) == letters
    assert {r["id"] for r in original} | {r["id"] for r in replayed} == \
        {i for i in range(1, 51) if i * 3 > 10}


def test_replay_one_step_and_unknown_step(write) -> None:  # type: ignore[no-untyped-def]
    path = _pipeline(write)
    run_cli("run", str(path))
    dead = path.parent / "out" / "o.dead.jsonl"
    only = run_cli("dlq", "replay", str(dead), "-p", str(path), "--step", "cast", "--json",
                   env={"HEADRACE_TEST_FIXED": "1"})
    assert only.code == 0, only.stderr
    assert json.loads(only.stdout)["replayed"] == 1
    bad = run_cli("dlq", "replay", str(dead), "-p", str(path), "--step", "nope")
    assert bad.code == 2 and "no such step" in bad.stderr
