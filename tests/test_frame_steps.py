"""The pandas, numpy and sql steps through real ``headrace`` runs: what they compute, how rows
keep their identity, how records are counted, and every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import assert_accounted, read_jsonl, run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Line n+1 holds id n. Record 7 has no amount; record 4's code does not convert to a number.
CSV = "id,carrier,amount,code\n" + "".join(
    f"{i},{'AA' if i % 2 else 'UA'},{'' if i == 7 else i * 10},{'x' if i == 4 else i}\n"
    for i in range(1, 11))

FUNCS = '''
import numpy as np
import pandas as pd


def add_and_drop(df):
    df["double"] = df["amount"] * 2
    df["batch_rows"] = len(df)
    return df[df["id"] != 2].sort_values("id", ascending=False)


def boom_on_three_and_eight(df):
    if df["id"].isin([3, 8]).any():
        raise ValueError("three or eight")
    df["seen_with"] = len(df)
    return df


def wrong_type(df):
    return df.to_dict("records")


def drop_a_column(df):
    return df.drop(columns=["amount"])


def doubled(df):
    return pd.concat([df, df])


def reset(df):
    return pd.concat([df, df]).reset_index(drop=True)


def mixed(df):
    df["flag"] = [1 if i != 5 else "five" for i in df["id"]]
    return df


def numpy_backend(df):
    df["kind"] = str(df["amount"].dtype)
    return df


def arrow_backend(df):
    df["kind"] = str(df["amount"].dtype)
    return df


def columns_seen(cols):
    amount, ident = cols["amount"], cols["id"]
    return {
        "masked": np.full(len(ident), isinstance(amount, np.ma.MaskedArray)),
        "id_view": np.full(len(ident), not ident.flags.writeable),
        "amount": amount * 3,
        "id_sq": ident * ident,
    }


def numpy_boom(cols):
    if 6 in cols["id"]:
        raise ZeroDivisionError("six")
    return {"neg": -cols["id"]}


def too_short(cols):
    return {"short": cols["id"][:-1]}


def not_a_mapping(cols):
    return [cols["id"]]


def numpy_mixed(cols):
    return {"label": np.array([str(i) if i == 9 else i for i in cols["id"]], dtype=object)}
'''


def pipeline(steps: str, *, source: str = "{use: csv, path: in.csv}") -> str:
    body = "\n".join(f"  {line}" for line in steps.strip("\n").splitlines())
    return (f"version: 1\nname: frames\nsource: {source}\nsteps:\n{body}\n"
            "sink: {use: jsonl, path: out/o.jsonl}\n")


def run_frames(write, steps: str, *, expect_code: int = 0, csv: str = CSV,
               args: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """Run ``steps`` between the CSV above and a JSONL sink; (summary, output, dead letters)."""
    write("in.csv", csv)
    write("funcs.py", FUNCS)
    path = write("p.yaml", pipeline(steps))
    result = run_cli("run", str(path), "--json", *args)
    assert result.code == expect_code, result.stderr
    summary = result.summary
    assert_accounted(summary)
    out_path, dead_path = path.parent / "out" / "o.jsonl", path.parent / "out" / "o.dead.jsonl"
    return (summary, read_jsonl(out_path) if out_path.exists() else [],
            read_jsonl(dead_path) if dead_path.exists() else [])


def failed_run(write, steps: str) -> tuple[dict[str, Any], str]:
    """A run that must fail with exit 1 and publish nothing: (summary, stderr)."""
    write("in.csv", CSV)
    write("funcs.py", FUNCS)
    path = write("p.yaml", pipeline(steps))
    result = run_cli("run", str(path), "--json")
    assert result.code == 1, result.stderr
    assert result.summary["status"] == "failed"
    assert not (path.parent / "out" / "o.jsonl").exists()
    return result.summary, result.stderr


def validate(write, steps: str) -> tuple[int, str]:
    write("in.csv", CSV)
    write("funcs.py", FUNCS)
    path = write("p.yaml", pipeline(steps))
    result = run_cli("validate", str(path))
    return result.code, result.stderr


def lines_of(dead: list[dict[str, Any]]) -> list[int | None]:
    return [d["position"].get("line") for d in dead]


# -- pandas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_pandas_drops_reorders_and_keeps_row_identity(write, executor: str) -> None:
    """A dropped row counts as filtered; rows keep their identity through a reorder, so a
    later step's dead letter names the record's own line."""
    steps = f"""
- {{use: pandas, function: 'funcs:add_and_drop', executor: {executor}}}
- {{use: cast, columns: {{code: INTEGER}}}}
"""
    summary, rows, dead = run_frames(write, steps, expect_code=1)  # 1 dead letter: exit 1
    assert [r["id"] for r in rows] == [10, 9, 8, 7, 6, 5, 3, 1]
    assert rows[0]["double"] == 200 and rows[3]["double"] is None
    assert {r["batch_rows"] for r in rows} == {10}
    assert summary["steps"][0]["filtered"] == 1
    assert [(d["record"]["id"], d["step"]) for d in dead] == [(4, "cast")]
    assert lines_of(dead) == [5]  # id 4 is on line 5, though it reached cast 6th


def test_pandas_raise_dead_letters_only_the_records_at_fault(write) -> None:
    """A function that raises: the batch is bisected, the records it fails on alone go to the
    dead-letter output with the exception, and the others are run again together."""
    summary, rows, dead = run_frames(write, "- {use: pandas, function: "
                                            "'funcs:boom_on_three_and_eight'}", expect_code=1)
    assert [r["id"] for r in rows] == [1, 2, 4, 5, 6, 7, 9, 10]
    assert {r["seen_with"] for r in rows} == {8}  # one call on all the good records
    assert [(d["record"]["id"], d["error"], d["message"]) for d in dead] == [
        (3, "ValueError", "three or eight"), (8, "ValueError", "three or eight")]
    assert lines_of(dead) == [4, 9]
    assert summary["records_dead"] == 2


def test_pandas_wrong_return_type_fails_clearly(write) -> None:
    """A function returning something else than a DataFrame fails the run (exit 1) naming
    the function and the type; nothing is published, nothing dead-lettered."""
    summary, stderr = failed_run(write, "- {use: pandas, function: 'funcs:wrong_type'}")
    assert "funcs:wrong_type returned list, expected a pandas DataFrame" in summary["error"]
    assert summary["records_dead"] == 0
    assert "funcs:wrong_type" in stderr


def test_pandas_expect_columns(write) -> None:
    """expect_columns: a returned DataFrame without a listed column fails the run, naming
    the column and what came back."""
    summary, _ = failed_run(write, "- {use: pandas, function: 'funcs:drop_a_column', "
                                   "expect_columns: [id, amount]}")
    assert "returned no column 'amount'" in summary["error"]
    assert "id, carrier, code" in summary["error"]
    ok, rows, _ = run_frames(write, "- {use: pandas, function: 'funcs:add_and_drop', "
                                    "expect_columns: [double]}")
    assert ok["status"] == "ok" and len(rows) == 9


@pytest.mark.parametrize("function", ["doubled", "reset"])
def test_pandas_more_rows_are_refused(write, function: str) -> None:
    """Rows that are not input rows (duplicated labels, or more rows after reset_index)
    fail the run: every output row must be an input record."""
    summary, stderr = failed_run(write, f"- {{use: pandas, function: 'funcs:{function}'}}")
    assert "returned 20 rows for a batch of 10" in summary["error"]
    assert "not add them" in stderr


def test_pandas_unconvertible_values_dead_letter_their_records(write) -> None:
    """A column of mixed objects: the values that do not fit the column dead-letter their
    input records (ConversionError, naming column and value); the rest go on."""
    _, rows, dead = run_frames(write, "- {use: pandas, function: 'funcs:mixed'}",
                               expect_code=1)
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert {r["flag"] for r in rows} == {1}
    assert len(dead) == 1 and dead[0]["record"]["id"] == 5
    assert dead[0]["error"] == "ConversionError"
    assert "column 'flag'" in dead[0]["message"] and "'five'" in dead[0]["message"]
    assert lines_of(dead) == [6]


def test_pandas_dtype_backends(write) -> None:
    """dtype_backend: pyarrow (default) gives ArrowDtype columns, numpy classic dtypes (an
    int column with a null becomes float64)."""
    steps = """
- {use: pandas, function: 'funcs:arrow_backend'}
- {use: pandas, function: 'funcs:numpy_backend', dtype_backend: numpy}
"""
    _, rows, _ = run_frames(write, steps)
    assert rows[0]["kind"] == "float64"
    _, rows, _ = run_frames(write, "- {use: pandas, function: 'funcs:arrow_backend'}")
    assert rows[0]["kind"] == "int64[pyarrow]"
    assert rows[6]["amount"] is None


def test_pandas_function_that_does_not_load_is_a_config_error(write) -> None:
    """A missing module is exit 2 naming file:line; so is an async function."""
    code, stderr = validate(write, "- use: pandas\n  function: nosuchmodule:fn")
    assert code == 2 and "p.yaml:6" in stderr and "nosuchmodule" in stderr
    write("afuncs.py", "async def f(df):\n    return df\n")
    code, stderr = validate(write, "- use: pandas\n  function: afuncs:f")
    assert code == 2 and "p.yaml:6" in stderr and "plain def" in stderr


# -- numpy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_numpy_columns_views_masks_and_results(write, executor: str) -> None:
    """Columns arrive as read-only views, a column with nulls as a masked array whose mask
    comes back as nulls; returned arrays add or replace columns."""
    summary, rows, _ = run_frames(
        write, f"- {{use: numpy, function: 'funcs:columns_seen', executor: {executor}}}")
    assert summary["records_out"] == 10
    assert all(r["masked"] and r["id_view"] for r in rows)
    assert [r["amount"] for r in rows][:7] == [30, 60, 90, 120, 150, 180, None]
    assert rows[9]["id_sq"] == 100
    assert list(rows[0]) == ["id", "carrier", "amount", "code", "masked", "id_view", "id_sq"]


def test_numpy_raise_dead_letters_the_record_at_fault(write) -> None:
    """A numpy function that raises dead-letters only the record it fails on."""
    _, rows, dead = run_frames(write, "- {use: numpy, function: 'funcs:numpy_boom'}",
                               expect_code=1)
    assert [r["neg"] for r in rows] == [-1, -2, -3, -4, -5, -7, -8, -9, -10]
    assert [(d["record"]["id"], d["error"]) for d in dead] == [(6, "ZeroDivisionError")]
    assert lines_of(dead) == [7]


@pytest.mark.parametrize(("function", "message"), [
    ("too_short", "returned column 'short' with 9 values for a batch of 10"),
    ("not_a_mapping", "returned list, expected a mapping of column name -> array"),
], ids=["wrong-length", "not-a-mapping"])
def test_numpy_wrong_results_fail_clearly(write, function: str, message: str) -> None:
    """A result that is not a mapping of full-length arrays fails the run (exit 1)."""
    summary, _ = failed_run(write, f"- {{use: numpy, function: 'funcs:{function}'}}")
    assert message in summary["error"]


def test_numpy_unconvertible_values_dead_letter_their_records(write) -> None:
    """An object array mixing ints and a string: the odd value's record is dead-lettered."""
    _, rows, dead = run_frames(write, "- {use: numpy, function: 'funcs:numpy_mixed'}",
                               expect_code=1)
    assert [r["label"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert [(d["record"]["id"], d["error"]) for d in dead] == [(9, "ConversionError")]


def test_vector_score_example(tmp_path: Path) -> None:
    """examples/vector-score, copied to a temp folder, scores every listing with numpy and
    keeps each district's best five; the scores match a plain Python computation."""
    import csv
    import math

    work = tmp_path / "vector-score"
    shutil.copytree(EXAMPLES / "vector-score", work, ignore=shutil.ignore_patterns("out"))
    result = run_cli("run", str(work / "pipeline.yaml"), "--json")
    assert result.code == 0, result.stderr
    summary = result.summary
    assert_accounted(summary)
    with (work / "data" / "listings.csv").open() as f:
        listings = list(csv.DictReader(f))
    assert summary["records_in"] == len(listings)

    def score(row: dict[str, str]) -> float:
        rating = int(row["rating"]) / 5 if row["rating"] else 0.5
        price_m2 = int(row["price"]) / int(row["area_m2"])
        return round(0.5 * rating + 0.3 * math.exp(-float(row["distance_km"]) / 5)
                     + 0.2 * (1 - min(max(price_m2 / 10_000, 0), 1)), 4)

    expected = {}
    for row in listings:
        if score(row) >= 0.45:
            expected.setdefault(row["district"], []).append((-score(row), int(row["id"])))
    with (work / "out" / "top-listings.csv").open() as f:
        out = list(csv.DictReader(f))
    for district, ranked in expected.items():
        got = [int(r["id"]) for r in out if r["district"] == district]
        assert got == [i for _, i in sorted(ranked)[:5]], district
    unrated = [r for r in out if r["stars"] == ""]
    assert all(next(x for x in listings if x["id"] == r["id"])["rating"] == ""
               for r in unrated)


# -- sql --------------------------------------------------------------------------------------


def test_sql_group_by_counts_fewer_rows_as_filtered(write) -> None:
    """A GROUP BY over the batch: rows out replace rows in, the difference counts as
    filtered, and the new rows carry no row ids."""
    steps = """
- use: sql
  query: >-
    SELECT carrier, count(*) AS n, sum(amount)::BIGINT AS total, max(code) AS code
    FROM batch GROUP BY carrier ORDER BY carrier
- {use: cast, columns: {code: INTEGER}}
"""
    summary, rows, dead = run_frames(write, steps, expect_code=1)
    assert rows == [{"carrier": "AA", "n": 5, "total": 180, "code": 9}]
    assert summary["steps"][0] == {**summary["steps"][0], "in": 10, "out": 2, "filtered": 8}
    assert dead[0]["record"]["carrier"] == "UA" and lines_of(dead) == [None]


def test_sql_runtime_error_isolates_records_and_keeps_groups_whole(write) -> None:
    """A cast failing on some records dead-letters exactly those (with DuckDB's error and
    their lines); the other records are aggregated together, not per half-batch."""
    steps = """
- use: sql
  query: "SELECT carrier, count(*) AS n, sum(CAST(code AS INTEGER))::BIGINT AS s FROM batch
          GROUP BY carrier ORDER BY carrier"
"""
    summary, rows, dead = run_frames(write, steps, expect_code=1)
    assert rows == [{"carrier": "AA", "n": 5, "s": 25}, {"carrier": "UA", "n": 4, "s": 26}]
    assert [(d["record"]["id"], d["error"]) for d in dead] == [(4, "ConversionException")]
    assert lines_of(dead) == [5]
    assert summary["records_filtered"] == 7


def test_sql_more_rows_are_refused(write) -> None:
    """A query that makes more rows than it got fails the run (the accounting)."""
    query = "SELECT id, unnest([1, 2]) AS copy FROM batch"
    summary, stderr = failed_run(write, f"- {{use: sql, query: '{query}'}}")
    assert "the query made 20 rows from a batch of 10" in summary["error"]
    assert "not add them" in stderr


@pytest.mark.parametrize(("query", "message", "where"), [
    ("SELECT carier FROM batch", 'Referenced column "carier" not found', "p.yaml:5: step 'agg'"),
    ("SELEKT id FROM batch", "syntax error", "p.yaml:7: query"),
], ids=["unknown-column", "syntax-error"])
def test_sql_query_errors_name_file_and_line(write, query: str, message: str,
                                             where: str) -> None:
    """A misspelt column (checked against the source's columns: the step's line) or a
    syntax error (the query's line) is a config error, exit 2, before anything runs."""
    code, stderr = validate(write, f"- id: agg\n  use: sql\n  query: '{query}'")
    assert code == 2, stderr
    assert where in stderr and message in stderr
    result = run_cli("run", str(write("p.yaml", pipeline(
        f"- id: agg\n  use: sql\n  query: '{query}'"))))
    assert result.code == 2 and message in result.stderr


@pytest.mark.parametrize(("query", "message"), [
    ("COPY batch TO 'stolen.csv'", "only SELECT is allowed, not COPY"),
    ("ATTACH 'other.db'", "only SELECT is allowed, not ATTACH"),
    ("INSTALL httpfs", "only SELECT is allowed"),
    ("LOAD httpfs", "only SELECT is allowed"),
    ("PRAGMA version", "only SELECT is allowed, not PRAGMA"),
    ("SET threads = 8", "only SELECT is allowed, not SET"),
    ("CALL pragma_version()", "only SELECT is allowed, not CALL"),
    ("SELECT * FROM batch; DROP TABLE batch", "one SELECT statement expected, found 2"),
    ("SELECT * FROM read_csv('in.csv')", "table function read_csv() is not allowed"),
    ("SELECT b.* FROM batch b, read_text('funcs.py') t", "table function read_text()"),
    ("SELECT * FROM batch WHERE id IN (SELECT id FROM read_parquet('x.parquet'))",
     "table function read_parquet()"),
    ("SELECT * FROM 'in.csv'", "reads only the table 'batch', not 'in.csv'"),
    ("SELECT * FROM other", "not 'other'"),
    ("SELECT * FROM main.batch", "not 'batch'"),
], ids=["copy", "attach", "install", "load", "pragma", "set", "call", "two-statements",
        "read_csv", "read_text", "subquery-read_parquet", "file-as-table", "other-table",
        "qualified"])
def test_sql_refuses_anything_but_a_select_over_the_batch(write, query: str,
                                                          message: str) -> None:
    """Statements other than SELECT, table functions and tables other than batch are config
    errors (exit 2) naming the query's line; nothing is read or written."""
    quoted = query.replace("'", "''")
    code, stderr = validate(write, f"- use: sql\n  query: '{quoted}'")
    assert code == 2, stderr
    assert "p.yaml:6" in stderr and message in stderr


def test_sql_with_cte_and_window(write) -> None:
    """CTEs and window functions over the batch are fine."""
    steps = """
- use: sql
  query: >-
    WITH ranked AS (SELECT *, row_number() OVER (PARTITION BY carrier ORDER BY id DESC) AS r
                    FROM batch)
    SELECT id, carrier FROM ranked WHERE r = 1 ORDER BY id
"""
    summary, rows, _ = run_frames(write, steps)
    assert rows == [{"id": 9, "carrier": "AA"}, {"id": 10, "carrier": "UA"}]
    assert summary["records_filtered"] == 8


def test_frame_steps_pass_the_conformance_suite(tmp_path: Path) -> None:
    """The plugin kit's conformance checks pass on the three steps."""
    from headrace.testing import check_plugin

    (tmp_path / "fn.py").write_text(
        "def same(df):\n    return df\n\ndef none(cols):\n    return {}\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        for name, options in [("sql", {"query": "SELECT * FROM batch"}),
                              ("pandas", {"function": "fn:same"}),
                              ("numpy", {"function": "fn:none"})]:
            report = check_plugin("step", name, options=options, base_dir=tmp_path)
            assert report.ok, report.format()
    finally:
        sys.path.remove(str(tmp_path))
