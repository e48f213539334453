"""Sinks: every format, stdout, atomic publication, and clear errors when writing fails."""

from __future__ import annotations

import csv
import io
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import read_jsonl, run_cli

CSV = "id,name,score\n1,a,1.5\n2,b,\n3,c,3.5\n"


def pipeline(write, sink: str) -> Path:  # type: ignore[no-untyped-def]
    write("in.csv", CSV)
    return write("p.yaml", f"""
        version: 1
        name: sinks
        source: {{use: csv, path: in.csv}}
        sink: {sink}
        """)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_file_sinks_write_every_record(write, tmp_path: Path, fmt: str) -> None:
    """Each file sink writes all records, creating folders; no temporary file is left."""
    path = pipeline(write, f"{{use: {fmt}, path: deep/er/out.{fmt}}}")
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    out = tmp_path / "deep" / "er" / f"out.{fmt}"
    if fmt == "parquet":
        rows = pq.read_table(out).to_pylist()
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
    else:
        rows = read_jsonl(out)
    assert [str(r["id"]) for r in rows] == ["1", "2", "3"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.parametrize(("sink", "parse"), [
    ("{use: stdout}", read_jsonl),
    ("{use: stdout, format: csv}", None),
    ("{use: csv, path: '-'}", None),
    ("{use: jsonl, path: '-'}", read_jsonl),
])
def test_stdout_sinks(write, tmp_path: Path, sink: str, parse) -> None:  # type: ignore[no-untyped-def]
    """Data goes to stdout; progress and summary stay on stderr."""
    result = run_cli("run", str(pipeline(write, sink)))
    assert result.code == 0, result.stderr
    if parse is None:
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
    else:
        out = tmp_path / "stdout.jsonl"
        out.write_text(result.stdout)
        rows = parse(out)
    assert [str(r["id"]) for r in rows] == ["1", "2", "3"]
    assert "3 in" in result.stderr


def test_empty_input_still_writes_a_valid_file(write, tmp_path: Path) -> None:
    """A source with no records gives an empty but valid Parquet file."""
    write("in.csv", "id,name\n")
    path = write("p.yaml", """
        version: 1
        name: empty
        source: {use: csv, path: in.csv}
        sink: {use: parquet, path: out.parquet}
        """)
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 0


def test_unwritable_output_is_one_line_exit_1(write, tmp_path: Path) -> None:
    """An output path under a regular file: exit 1, one line naming the path."""
    (tmp_path / "afile").write_text("x")
    path = pipeline(write, "{use: parquet, path: afile/out.parquet}")
    result = run_cli("run", str(path))
    assert result.code == 1
    assert "afile" in result.stderr
    assert "Traceback" not in result.stderr


def test_parquet_to_stdout_is_a_config_error(write) -> None:
    """Parquet cannot stream to stdout: exit 2 with a hint."""
    result = run_cli("validate", str(pipeline(write, "{use: parquet, path: '-'}")))
    assert result.code == 2
    assert "stdout" in result.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs: a real disk-full condition (needs root, as on CI)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root to mount a tmpfs for the disk-full test")
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_leaves_no_partial_file(write, tmp_path: Path, tiny_disk: Path) -> None:
    """Disk full: exit 1, an error naming the output, no file under the final name."""
    rows = "".join(f"{i},{'x' * 50}\n" for i in range(100_000))
    write("big.csv", "id,pad\n" + rows)
    path = write("p.yaml", f"""
        version: 1
        name: full
        source: {{use: csv, path: big.csv}}
        sink: {{use: csv, path: {tiny_disk}/out.csv}}
        """)
    result = run_cli("run", str(path))
    assert result.code == 1, result.stderr
    assert "out.csv" in result.stderr
    assert "No space left" in result.stderr
    # Only the hidden partial file --resume would continue (once space is freed).
    assert [p.name for p in tiny_disk.iterdir()] in ([], [".out.csv.partial"])
    result = run_cli("run", str(path), "--set", "runtime.checkpoint=false")
    assert result.code == 1, result.stderr
    assert list(tiny_disk.iterdir()) == []


def test_parquet_segments_assemble_into_the_same_file(write) -> None:  # type: ignore[no-untyped-def]
    """With a checkpoint every batch, a Parquet output is committed as several segments and
    assembled at the end: the same table as a run without checkpoints, timestamps included
    (Parquet stores timestamp[s] as timestamp[ms], which the assembly must accept)."""
    rows = "".join(f"{i},2024-01-{1 + i % 28:02d} 10:00:{i % 60:02d},{i * 0.5}\n"
                   for i in range(20_000))
    write("in.csv", "id,ts,x\n" + rows)
    path = write("p.yaml", """
        version: 1
        name: segments
        source: {use: csv, path: in.csv, block_size: 16384}
        sink: {use: parquet, path: out/segmented.parquet}
        runtime: {checkpoint_interval: 1ms}
        """)
    assert run_cli("run", str(path)).code == 0
    reference = run_cli("run", str(path), "--set", "runtime.checkpoint=false",
                        "--set", "sink.path=out/whole.parquet")
    assert reference.code == 0, reference.stderr
    out = path.parent / "out"
    assert pq.ParquetFile(out / "segmented.parquet").num_row_groups > 1
    assert pq.read_table(out / "segmented.parquet").equals(pq.read_table(out / "whole.parquet"))
    assert sorted(p.name for p in out.iterdir()) == ["segmented.parquet", "whole.parquet"]
