"""Projection pushdown: sources skip columns that no step and no sink will ever see."""

from __future__ import annotations

import pytest

from headrace.config import load_pipeline
from headrace.engine import build_plan, needed_source_columns
from headrace.plugin import referenced_columns

from .conftest import read_jsonl, run_cli

CSV = "a,b,c,d,e\n1,2,3,4,5\n6,7,8,9,10\n"


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ("[{use: select, columns: [b, a]}]", ["a", "b"]),
        ("[{use: filter, where: 'c > 1'}, {use: select, columns: [a]}]", ["a", "c"]),
        ("[{use: derive, columns: {x: 'd * 2'}}, {use: select, columns: [x]}]", ["d"]),
        ("[{use: rename, columns: {e: z}}, {use: select, columns: [z]}]", ["e"]),
        ("[{use: cast, columns: {b: DOUBLE}}, {use: select, columns: [b]}]", ["b"]),
        ("[{use: filter, where: 'a > 1'}]", None),
        ("[{use: python, function: 'json:dumps'}, {use: select, columns: [a]}]", None),
    ],
    ids=["select", "filter", "derive", "rename", "cast", "no-select", "python"],
)
def test_needed_columns(write, steps: str, expected: list[str] | None) -> None:
    """The columns a pipeline reads are found walking back from the sink; unknown means all."""
    write("in.csv", CSV)
    path = write("p.yaml", f"""
        version: 1
        name: proj
        source: {{use: csv, path: in.csv}}
        steps: {steps}
        sink: {{use: jsonl, path: out.jsonl}}
        """)
    plan = build_plan(load_pipeline(path))
    assert needed_source_columns(plan, plan.source.peek_schema()) == expected


def test_referenced_columns_handles_quotes_and_case() -> None:
    """Quoted identifiers, case-insensitive names and string literals are told apart."""
    names = ["Amount", "my col", "origin"]
    assert referenced_columns("amount > 1 AND \"my col\" = 'origin'", names) == {
        "Amount", "my col"}
    assert referenced_columns("x.*", names) is None


def test_unused_bad_column_does_not_cost_a_record(write, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A column the pipeline never reads is not even converted, so its junk is harmless."""
    write("in.csv", "a,junk\n1,2\n2,x\n3,4\n")
    path = write("p.yaml", """
        version: 1
        name: proj
        source: {use: csv, path: in.csv, types: {junk: int64}}
        steps: [{use: select, columns: [a]}]
        sink: {use: jsonl, path: out.jsonl}
        """)
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    assert read_jsonl(tmp_path / "out.jsonl") == [{"a": 1}, {"a": 2}, {"a": 3}]
