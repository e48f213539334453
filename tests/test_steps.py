"""Built-in steps through real runs: SQL steps, the python step in every mode and executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import assert_accounted, read_jsonl, run_cli

CSV = "id,name,amount\n" + "".join(f"{i},n{i},{i * 10 if i != 7 else ''}\n" for i in range(1, 11))


def pipeline_text(steps: str) -> str:
    body = "\n".join("  " + line.strip() if line.strip().startswith("- ") else "    "
                     + line.strip() for line in steps.strip("\n").splitlines())
    return ("version: 1\nname: steps\nsource: {use: csv, path: in.csv}\nsteps:\n"
            f"{body}\nsink: {{use: jsonl, path: out/o.jsonl}}\n")


def run_steps(write, steps: str, *, csv: str = CSV, extra_files: dict[str, str] | None = None,
              expect_code: int = 0):  # type: ignore[no-untyped-def]
    write("in.csv", csv)
    for name, text in (extra_files or {}).items():
        write(name, text)
    path = write("p.yaml", pipeline_text(steps))
    result = run_cli("run", str(path), "--json")
    assert result.code == expect_code, result.stderr
    assert_accounted(result.summary)
    base = path.parent
    dead_path = base / "out" / "o.dead.jsonl"
    return result.summary, read_jsonl(base / "out" / "o.jsonl"), (
        read_jsonl(dead_path) if dead_path.exists() else [])


def test_filter_treats_null_as_false(write) -> None:
    """filter keeps rows where the condition is true; a null condition drops the row."""
    summary, rows, _ = run_steps(write, "  - {use: filter, where: 'amount > 50'}")
    assert [r["id"] for r in rows] == [6, 8, 9, 10]
    assert summary["records_filtered"] == 6


def test_derive_adds_and_replaces_columns(write) -> None:
    """derive appends new columns and replaces existing ones in place."""
    steps = "  - use: derive\n    columns: {name: \"upper(name)\", double: \"amount * 2\"}"
    _, rows, _ = run_steps(write, steps)
    assert rows[0] == {"id": 1, "name": "N1", "amount": 10, "double": 20}
    assert rows[6]["double"] is None


def test_select_rename_cast(write) -> None:
    """select keeps and orders columns, rename renames, cast converts."""
    steps = """
          - {use: select, columns: [amount, id]}
          - {use: rename, columns: {amount: cents}}
          - {use: cast, columns: {cents: DOUBLE, id: VARCHAR}}
    """
    _, rows, _ = run_steps(write, steps.strip("\n"))
    assert rows[0] == {"cents": 10.0, "id": "1"}
    assert list(rows[0]) == ["cents", "id"]


def test_cast_failures_become_dead_letters_with_lines(write) -> None:
    """A value that does not convert dead-letters only its own record, with its line."""
    csv = "id,code\n1,10\n2,x\n3,30\n4,y\n5,50\n"
    summary, rows, dead = run_steps(
        write, "  - {use: cast, columns: {code: INTEGER}}", csv=csv, expect_code=1
    )
    assert [r["id"] for r in rows] == [1, 3, 5]
    assert sorted(d["position"]["line"] for d in dead) == [3, 5]
    assert all(d["step"] == "cast" and d["error"] == "ConversionException" for d in dead)
    assert summary["steps"][0]["dead"] == 2


def test_expression_runtime_error_isolated(write) -> None:
    """A data-dependent SQL error (division by zero) dead-letters just that record."""
    csv = "a,b\n1,1\n2,0\n3,3\n"
    _, rows, dead = run_steps(
        write, "  - {use: derive, columns: {q: 'a // b'}}", csv=csv, expect_code=1
    )
    assert [r["a"] for r in rows] == [1, 3]
    assert dead[0]["record"] == {"a": 2, "b": 0}
    assert dead[0]["position"]["line"] == 3


FUNCS = '''
import asyncio

def double(record):
    if record["id"] == 3:
        raise ValueError("three is bad")
    if record["id"] == 4:
        return None
    if record["id"] == 5:
        return 42
    record["amount2"] = (record["amount"] or 0) * 2
    return record

async def adouble(record):
    await asyncio.sleep(0)
    return double(record)

def keep_even(rows):
    return [r for r in rows if r["id"] % 2 == 0]

def arrow_head(table):
    return table.slice(0, 3)

def explode_on_six(rows):
    if any(r["id"] == 6 for r in rows):
        raise RuntimeError("six")
    return rows
'''


@pytest.mark.parametrize(
    ("function", "executor"),
    [("double", "thread"), ("double", "async"), ("double", "process"), ("adouble", None)],
    ids=["sync-thread", "sync-inline", "sync-process", "async"],
)
def test_python_record_mode(write, function: str, executor: str | None) -> None:
    """Per record: dict goes on, None filters, a raise or a wrong return dead-letters."""
    executor_line = f", executor: {executor}" if executor else ""
    steps = f"  - {{use: python, function: 'funcs:{function}'{executor_line}}}"
    summary, rows, dead = run_steps(write, steps, extra_files={"funcs.py": FUNCS}, expect_code=1)
    assert [r["id"] for r in rows] == [1, 2, 6, 7, 8, 9, 10]
    assert rows[0]["amount2"] == 20
    assert summary["records_filtered"] == 1
    assert {d["position"]["line"]: d["error"] for d in dead} == {4: "ValueError", 6: "TypeError"}
    assert "three is bad" in next(d["message"] for d in dead if d["error"] == "ValueError")


def test_python_batch_modes(write) -> None:
    """Per batch: rows and arrow functions; a raise isolates the bad records."""
    steps = """
          - {use: python, function: 'funcs:explode_on_six', mode: batch}
          - {use: python, function: 'funcs:keep_even', mode: batch}
          - {use: python, function: 'funcs:arrow_head', mode: batch, format: arrow}
    """
    _summary, rows, dead = run_steps(write, steps.strip("\n"), extra_files={"funcs.py": FUNCS},
                                    expect_code=1)
    assert [r["id"] for r in rows] == [2, 4, 8]
    assert [d["record"]["id"] for d in dead] == [6]
    assert dead[0]["error"] == "RuntimeError"


def test_concurrency_preserves_order(write) -> None:
    """Several batches in flight per step still come out in input order."""
    csv = "id\n" + "".join(f"{i}\n" for i in range(20000))
    write("in.csv", csv)
    path = write("p.yaml", """
        version: 1
        name: order
        source: {use: csv, path: in.csv, block_size: 4096}
        steps:
          - {use: python, function: 'slow:jitter', concurrency: 4}
          - {use: filter, where: "id % 3 <> 0", concurrency: 3}
        sink: {use: jsonl, path: out/o.jsonl}
        """)
    write("slow.py", "import time, random\n"
                     "def jitter(r):\n"
                     "    if r['id'] % 500 == 0: time.sleep(random.random() / 200)\n"
                     "    return r\n")
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    ids = [r["id"] for r in read_jsonl(Path(path.parent / "out" / "o.jsonl"))]
    assert ids == [i for i in range(20000) if i % 3 != 0]


def test_unloadable_function_is_a_config_error(write) -> None:
    """A python step naming a missing module fails at load with file:line, exit 2."""
    write("in.csv", CSV)
    path = write("p.yaml", """
        version: 1
        name: x
        source: {use: csv, path: in.csv}
        steps:
          - use: python
            function: nosuchmodule:fn
        sink: {use: jsonl, path: out/o.jsonl}
        """)
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert "p.yaml:6" in result.stderr and "nosuchmodule" in result.stderr


def test_on_error_fail_and_skip(write) -> None:
    """on_error: fail stops the run (exit 1); skip drops failing records as filtered."""
    step = "  - {use: python, function: 'funcs:double', on_error: %s}"
    summary, _, dead = run_steps(write, step % "skip", extra_files={"funcs.py": FUNCS})
    assert summary["records_dead"] == 0 and summary["records_filtered"] == 3
    assert dead == []
    path = write("p.yaml", pipeline_text(step % "fail"))
    (path.parent / "out" / "o.jsonl").unlink()
    result = run_cli("run", str(path), "--json")
    assert result.code == 1
    assert result.summary["status"] == "failed"
    assert "three is bad" in result.summary["error"]
    assert not (path.parent / "out" / "o.jsonl").exists()


def test_step_ids_default_to_unique_plugin_names(write) -> None:
    """Two filters without ids become filter and filter_2 in the summary."""
    steps = """
          - {use: filter, where: 'id > 1'}
          - {use: filter, where: 'id > 2'}
          - {use: select, id: keep, columns: [id]}
    """
    summary, rows, _ = run_steps(write, steps.strip("\n"))
    assert [s["id"] for s in summary["steps"]] == ["filter", "filter_2", "keep"]
    assert [s["filtered"] for s in summary["steps"]] == [1, 1, 0]
    assert len(rows) == 8


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "auto"])
def test_event_loop_choice(write, loop: str) -> None:
    """runtime.loop picks the event loop; every choice runs the same pipeline."""
    write("in.csv", CSV)
    path = write("p.yaml", f"""
        version: 1
        name: loops
        source: {{use: csv, path: in.csv}}
        steps: [{{use: filter, where: 'id > 5'}}]
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{loop: {loop}}}
        """)
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    assert result.summary["records_out"] == 5
    assert result.summary["loop"] == ("asyncio" if loop == "asyncio" else "uvloop")


def test_process_executor_with_concurrency_keeps_order(write) -> None:
    """Two worker processes on one step: every record once, in input order."""
    csv = "id\n" + "".join(f"{i}\n" for i in range(30000))
    write("in.csv", csv)
    write("double.py", "def double(r):\n    r['twice'] = r['id'] * 2\n    return r\n")
    path = write("p.yaml", """
        version: 1
        name: procs
        source: {use: csv, path: in.csv, block_size: 8192}
        steps:
          - {use: python, function: 'double:double', executor: process, concurrency: 2}
        sink: {use: jsonl, path: out/o.jsonl}
        """)
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    rows = read_jsonl(Path(path.parent / "out" / "o.jsonl"))
    assert [r["id"] for r in rows] == list(range(30000))
    assert all(r["twice"] == 2 * r["id"] for r in rows)
