"""Built-in sources: CSV, JSONL, Parquet, compressed and stdin; bad input is dead-lettered
with its line number and the run goes on."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import assert_accounted, read_jsonl, run_cli

PIPELINE = """
version: 1
name: src
source:
  use: {use}
  path: {path}
{extra}
sink:
  use: jsonl
  path: out/o.jsonl
"""


def pipeline(write, use: str, path: str, extra: str = "") -> Path:
    return write("p.yaml", PIPELINE.format(use=use, path=path, extra=extra))  # type: ignore[no-any-return]


def run_json(path: Path, *args: str, stdin: bytes | None = None):  # type: ignore[no-untyped-def]
    result = run_cli("run", str(path), "--json", *args, stdin=stdin)
    assert result.code in (0, 1), result.stderr
    assert_accounted(result.summary)
    return result


def test_csv_types_are_inferred(write) -> None:
    """Numbers, strings, timestamps and nulls come through with their types; an empty text
    field is null (as DuckDB, pandas and polars read it) unless strings_can_be_null is off."""
    data = write("in.csv", "a,b,c,d\n1,x,2024-01-01 10:00:00,1.5\n2,,2024-01-02 11:00:00,\n")
    result = run_json(pipeline(write, "csv", "in.csv"))
    assert result.code == 0
    rows = read_jsonl(data.parent / "out" / "o.jsonl")
    assert rows == [
        {"a": 1, "b": "x", "c": "2024-01-01 10:00:00", "d": 1.5},
        {"a": 2, "b": None, "c": "2024-01-02 11:00:00", "d": None},
    ]
    run_json(pipeline(write, "csv", "in.csv"), "--set", "source.strings_can_be_null=false")
    rows = read_jsonl(data.parent / "out" / "o.jsonl")
    assert rows[1]["b"] == "" and rows[1]["d"] is None


def test_csv_blocks_keep_types_and_line_numbers(write) -> None:
    """Many small blocks: the first block's types hold for all; every row arrives once."""
    lines = "".join(f"{i},name{i}\n" for i in range(5000))
    write("in.csv", "id,name\n" + lines)
    result = run_json(pipeline(write, "csv", "in.csv", "  block_size: 4096"))
    assert result.code == 0
    rows = read_jsonl(Path(write("x", "").parent / "out" / "o.jsonl"))
    assert [r["id"] for r in rows] == list(range(5000))


BAD_CSV = (
    b"id,amount,name\n"
    b"1,10,ok\n"
    b"2,20,too,many\n"        # line 3: ragged
    b"3,abc,wrongtype\n"      # line 4: not an int
    b"4,40,\xff\xfe bad utf8\n"  # line 5: invalid UTF-8
    b"\n"                     # line 6: blank, ignored
    b"5,50,\"unclosed\n"      # line 7: quote runs past the line end
    b"6,60,fine\n"            # line 8
)


def test_bad_csv_rows_are_dead_lettered_with_their_lines(write) -> None:
    """Ragged rows, wrong types, invalid UTF-8 and unclosed quotes: dead letters by line."""
    write("in.csv", BAD_CSV)
    # Types are inferred from the first block, which here holds the bad rows too.
    result = run_json(pipeline(write, "csv", "in.csv", "  types: {amount: int64}"))
    assert result.code == 1  # dead letters beyond max_failures (0)
    summary = result.summary
    assert summary["records_dead"] == 4
    assert summary["records_out"] == 2
    base = Path(write("x", "").parent)
    out = read_jsonl(base / "out" / "o.jsonl")
    assert [r["id"] for r in out] == [1, 6]
    dead = read_jsonl(base / "out" / "o.dead.jsonl")
    assert sorted(d["position"]["line"] for d in dead) == [3, 4, 5, 7]
    by_line = {d["position"]["line"]: d for d in dead}
    assert by_line[3]["error"] == "RaggedRow"
    assert "int64" in by_line[4]["message"]
    assert by_line[5]["error"] == "UnicodeDecodeError"
    assert "quote" in by_line[7]["message"]
    assert all(d["step"] == "csv" and d["pipeline"] == "src" for d in dead)


def test_max_failures_lets_a_run_pass(write) -> None:
    """runtime.max_failures allows some dead letters (count or percent)."""
    write("in.csv", BAD_CSV)
    path = pipeline(write, "csv", "in.csv", "  types: {amount: int64}")
    assert run_json(path, "--set", "runtime.max_failures=4").code == 0
    assert run_json(path, "--set", "runtime.max_failures=70%").code == 0
    assert run_json(path, "--set", "runtime.max_failures=3").code == 1


def test_long_line_is_skipped_while_streaming(write) -> None:
    """A line over max_line_bytes becomes a dead letter; memory never holds it whole."""
    long_line = b"2," + b"x" * 300_000 + b"\n"
    write("in.csv", b"id,v\n1,a\n" + long_line + b"3,c\n")
    extra = "  block_size: 8192\n  max_line_bytes: 65536"
    result = run_json(pipeline(write, "csv", "in.csv", extra))
    assert result.summary["records_dead"] == 1
    dead = read_jsonl(Path(write("x", "").parent / "out" / "o.dead.jsonl"))
    assert dead[0]["error"] == "LineTooLong"
    assert dead[0]["position"]["line"] == 3
    rows = read_jsonl(Path(write("x", "").parent / "out" / "o.jsonl"))
    assert [r["id"] for r in rows] == [1, 3]


def test_csv_declared_types_and_no_header(write) -> None:
    """types: overrides inference; header: false with column_names."""
    write("in.csv", "1,007\n2,010\n")
    extra = "  header: false\n  column_names: [n, code]\n  types: {code: string}"
    run_json(pipeline(write, "csv", "in.csv", extra))
    rows = read_jsonl(Path(write("x", "").parent / "out" / "o.jsonl"))
    assert rows == [{"n": 1, "code": "007"}, {"n": 2, "code": "010"}]


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_input_by_extension(write, suffix: str) -> None:
    """gzip and zstd inputs are decompressed while streaming."""
    data = b"id,v\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(1000))
    if suffix == ".gz":
        payload = gzip.compress(data)
    else:
        payload = pa.compress(data, codec="zstd", asbytes=True)
        # pa.compress writes a raw frame; a .zst file is exactly that
    write(f"in.csv{suffix}", payload)
    result = run_json(pipeline(write, "csv", f"in.csv{suffix}"))
    assert result.summary["records_out"] == 1000


def test_stdin_source(write) -> None:
    """path: '-' reads stdin."""
    path = pipeline(write, "csv", "'-'")
    result = run_json(path, stdin=b"a,b\n1,2\n3,4\n")
    assert result.summary["records_out"] == 2


def test_jsonl_source_with_bad_lines(write) -> None:
    """Bad JSON, wrong types and very deep nesting are dead letters; the rest flows."""
    deep = "[" * 100_000 + "]" * 100_000
    text = (
        '{"id": 1, "v": "a"}\n'
        "{not json}\n"
        '{"id": "two", "v": "b"}\n'
        f'{{"id": 4, "v": {deep}}}\n'
        '{"id": 5, "v": "e"}\n'
    )
    write("in.jsonl", text)
    result = run_json(pipeline(write, "jsonl", "in.jsonl"))
    summary = result.summary
    assert summary["records_out"] == 2
    assert summary["records_dead"] == 3
    dead = read_jsonl(Path(write("x", "").parent / "out" / "o.dead.jsonl"))
    assert sorted(d["position"]["line"] for d in dead) == [2, 3, 4]


def test_jsonl_invalid_utf8_is_a_dead_letter(write) -> None:
    """pyarrow reads invalid UTF-8 into a string column; the source refuses the line (a
    dead letter with its number) instead of letting a sink fail the whole run on it."""
    write("in.jsonl", b'{"id": 1, "v": "a"}\n{"id": 2, "v": "b\xff\xfe"}\n{"id": 3, "v": "c"}\n')
    result = run_json(pipeline(write, "jsonl", "in.jsonl"))
    assert (result.summary["records_out"], result.summary["records_dead"]) == (2, 1)
    dead = read_jsonl(Path(write("x", "").parent / "out" / "o.dead.jsonl"))
    assert dead[0]["position"]["line"] == 2 and "invalid UTF-8" in dead[0]["message"]


def test_parquet_source_streams_batches(tmp_path: Path, write) -> None:
    """Parquet is read in batches; positions are row numbers."""
    pq.write_table(pa.table({"id": list(range(2500)), "v": ["x"] * 2500}), tmp_path / "in.parquet")
    result = run_json(pipeline(write, "parquet", "in.parquet", "  batch_size: 1000"))
    assert result.summary["records_out"] == 2500
    rows = read_jsonl(tmp_path / "out" / "o.jsonl")
    assert [r["id"] for r in rows] == list(range(2500))


@pytest.mark.parametrize(
    ("use", "path", "content", "needle"),
    [
        ("csv", "missing.csv", None, "no such file"),
        ("parquet", "bad.parquet", b"not parquet", "not a readable Parquet file"),
        ("csv", "empty.csv", b"", "empty file"),
    ],
    ids=["missing", "not-parquet", "empty-csv"],
)
def test_unreadable_source_fails_with_one_line(write, use, path, content, needle) -> None:
    """A source that cannot be read at all: exit 1 and one clear line."""
    if content is not None:
        write(path, content)
    result = run_cli("run", str(pipeline(write, use, path)))
    assert result.code == 1
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_parquet_page_fails_cleanly(tmp_path: Path, write) -> None:
    """A Parquet file damaged after its footer was read: exit 1, one line, nothing published."""
    table = pa.table({"id": list(range(200_000)), "v": [f"value {i}" for i in range(200_000)]})
    target = tmp_path / "in.parquet"
    pq.write_table(table, target, row_group_size=50_000, compression="snappy")
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 4096] = b"\x00" * 4096
    target.write_bytes(bytes(data))
    result = run_cli("run", str(pipeline(write, "parquet", "in.parquet")))
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "o.jsonl").exists()


def test_crlf_bom_and_nul_bytes(write, tmp_path: Path) -> None:
    """Windows line endings, a UTF-8 BOM and NUL bytes inside values are read as data."""
    write("in.csv", b"\xef\xbb\xbfid,name\r\n1,a\x00b\r\n\r\n2,c\r\n")
    result = run_json(pipeline(write, "csv", "in.csv"))
    assert result.code == 0, result.stderr
    rows = read_jsonl(tmp_path / "out" / "o.jsonl")
    assert rows == [{"id": 1, "name": "a\x00b"}, {"id": 2, "name": "c"}]


def test_type_drift_is_an_error_not_a_flood_of_dead_letters(write) -> None:
    """A column that changes type after the first block: one clear error, exit 1."""
    good = "".join(f"{i},{i}\n" for i in range(20_000))
    drift = "".join(f"{i},{i}.5\n" for i in range(20_000, 60_000))
    write("in.csv", "id,amount\n" + good + drift)
    result = run_cli("run", str(pipeline(write, "csv", "in.csv", "  block_size: 65536")))
    assert result.code == 1, result.stderr
    assert "most lines from line" in result.stderr and "types:" in result.stderr
