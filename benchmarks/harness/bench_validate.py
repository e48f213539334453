"""Benchmark 6: CSV -> validate (JSON Schema, 8 fields) -> derive -> Parquet, headrace
against the same checks written by hand in pyarrow, pandas, polars and DuckDB.

The input is headrace's flights sample data plus a ``tail`` column (10,000 distinct aircraft,
the key of benchmark 7) with about 1% of the rows spoiled, one field each, so that every
check of the schema (``contenders/validate_schema.json``) rejects some rows. The generator
records how many rows it spoiled; every contender's count of invalid rows is checked against
that number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from headrace.sampledata import BYTES_PER_ROW, flights_table

from .contenders import SCRIPTS, Contender, headrace_executable, run_round_robin, script
from .data import DATA_DIR, warm_cache
from .measure import Measurement
from .report import Table, goal, mib, ratio

GENERATOR_VERSION = 1  # bump to invalidate cached inputs
GROUPS = 10_000  # distinct ``tail`` values
INVALID_SHARE = 0.01
EXTRA_BYTES_PER_ROW = 6  # ",N0123"
GOALS = {"pyarrow": 1.0, "duckdb": 0.7}  # headrace throughput / theirs, at least
COLUMNS = ["id", "dep_time", "carrier", "flight", "tail", "origin", "dest", "dep_delay",
           "distance", "passengers", "delay_hours", "route"]
# One way to break each of the schema's checks (kept in step with validate_schema.json).
SPOILERS = ("dep_time null", "carrier not in enum", "flight below minimum",
            "origin fails pattern", "dest over maxLength", "dep_delay over maximum",
            "distance not above exclusiveMinimum", "id below minimum")
_COUNT = re.compile(r"^invalid=(\d+)$", re.MULTILINE)


# ----------------------------------------------------------------------------- input


def checked_flights_table(rows: int, seed: int = 0, start_id: int = 0) -> tuple[pa.Table, int]:
    """Flights with a ``tail`` key and about 1% spoiled rows; returns (table, spoiled rows)."""
    base = flights_table(rows, seed, start_id)
    rng = np.random.default_rng([seed, start_id, 6])
    tails = pa.array([f"N{k:04d}" for k in range(GROUPS)])
    tail = tails.take(pa.array(rng.integers(0, GROUPS, rows)))
    bad = np.flatnonzero(rng.random(rows) < INVALID_SHARE)
    kind = rng.integers(0, len(SPOILERS), len(bad))

    def spoil(name: str, which: int, change: Callable[[pa.Array], pa.Array]) -> pa.Array:
        column = base.column(name).combine_chunks()
        hit = np.zeros(rows, dtype=bool)
        hit[bad[kind == which]] = True
        if not hit.any():
            return column
        mask = pa.array(hit)
        return pc.replace_with_mask(column, mask, change(column.filter(mask)))

    columns = {
        "id": spoil("id", 7, lambda v: pc.subtract(-1, v)),
        "dep_time": spoil("dep_time", 0, lambda v: pa.nulls(len(v), v.type)),
        "carrier": spoil("carrier", 1, lambda v: pa.array(["ZZ"] * len(v))),
        "flight": spoil("flight", 2, lambda v: pc.multiply(v, 0)),
        "tail": tail,
        "origin": spoil("origin", 3, pc.utf8_capitalize),  # "ATL" -> "Atl"
        "dest": spoil("dest", 4, lambda v: pc.binary_join_element_wise(v, "X", "")),
        "dep_delay": spoil("dep_delay", 5, lambda v: pa.array([2000] * len(v), v.type)),
        "distance": spoil("distance", 6, pc.negate),
        "passengers": base.column("passengers"),
    }
    return pa.table(columns), len(bad)


def input_csv(size: int, seed: int = 0, chunk: int = 500_000) -> Path:
    """The path of the checked flights CSV of about ``size`` bytes, made if needed.

    A ``.meta.json`` sidecar records what was asked for, the rows, the spoiled rows and
    the file's size; the file is reused only while all still match.
    """
    path = DATA_DIR / f"checked-flights-{_label(size)}-seed{seed}.csv"
    meta_path = path.with_name(path.name + ".meta.json")
    wanted = {"size": size, "seed": seed, "generator": GENERATOR_VERSION}
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("wanted") == wanted and meta.get("bytes") == path.stat().st_size:
            return path
    print(f"generating {path.name} ...", flush=True)
    total = max(1, size // (BYTES_PER_ROW + EXTRA_BYTES_PER_ROW))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    written = invalid = 0
    writer: pacsv.CSVWriter | None = None
    try:
        while written < total:
            table, spoiled = checked_flights_table(min(chunk, total - written), seed, written)
            if writer is None:
                writer = pacsv.CSVWriter(str(tmp), table.schema)
            writer.write_table(table)
            written += table.num_rows
            invalid += spoiled
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    meta = {"wanted": wanted, "rows": written, "invalid": invalid, "bytes": path.stat().st_size}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def input_meta(path: Path) -> dict[str, int]:
    """Rows and spoiled rows recorded for a generated input."""
    meta = json.loads(path.with_name(path.name + ".meta.json").read_text(encoding="utf-8"))
    return {"rows": int(meta["rows"]), "invalid": int(meta["invalid"])}


def _label(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


# ----------------------------------------------------------------------------- contenders


def headrace_pipeline(name: str, pipeline: str, sets: tuple[str, ...] = ()) -> Contender:
    """``headrace -q run contenders/<pipeline> [--set ...]``; run directory under work/."""
    exe = headrace_executable()
    args = [arg for item in sets for arg in ("--set", item)]
    return Contender(
        name=name,
        argv=lambda src, dst: [exe, "-q", "run", str(SCRIPTS / pipeline), *args],
        env=lambda src, dst, work: {"BENCH_INPUT": str(src), "BENCH_OUTPUT": str(dst),
                                    "BENCH_RUN_DIR": str(work / f"run-{name}")},
    )


def contenders() -> list[Contender]:
    return [
        headrace_pipeline("headrace", "headrace_validate.yaml"),
        headrace_pipeline("headrace-dl", "headrace_validate.yaml",
                          ("steps.validate.mode=dead_letter", "runtime.max_failures=5%")),
        script("pyarrow", "validate_pyarrow.py"),
        script("pandas", "validate_pandas.py"),
        script("polars", "validate_polars.py"),
        script("duckdb", "validate_duckdb.py"),
    ]


def _reported_invalid(name: str, work: Path, run: Measurement | None) -> int | None:
    """The invalid rows a contender counted itself: headrace's step counter in the run
    summary, or a script's ``invalid=N`` line on stderr (the pyarrow and pandas scripts)."""
    if name.startswith("headrace"):
        summary = work / f"run-{name}" / "summary.json"
        if not summary.is_file():
            return None
        data = json.loads(summary.read_text(encoding="utf-8"))
        value = data.get("plugin_metrics", {}).get("validate", {}).get("invalid")
        return int(value) if value is not None else None
    found = _COUNT.findall(run.stderr) if run is not None else []
    return int(found[-1]) if found else None


def _shape(path: Path) -> tuple[int, list[str]] | None:
    if not path.is_file():
        return None
    meta = pq.ParquetFile(path)
    return meta.metadata.num_rows, meta.schema_arrow.names


def run(src: Path, work: Path, repeats: int) -> list[Table]:
    meta = input_meta(src)
    print(f"\nbenchmark 6: {src.name} ({meta['rows']:,} rows, {meta['invalid']:,} spoiled), "
          f"{repeats} repeat(s)", flush=True)
    warm_cache(src)
    racers = contenders()
    results = run_round_robin(racers, [("1x", src)], work, repeats, ".parquet")
    size = src.stat().st_size
    expected_out = meta["rows"] - meta["invalid"]

    table = Table(
        f"Benchmark 6: CSV -> validate (JSON Schema, 8 fields) -> derive -> Parquet "
        f"({size / 1e6:,.0f} MB, {meta['rows']:,} rows, median of {repeats})",
        ["contender", "median s", "min-max s", "MB/s", "peak RSS MiB", "output rows",
         "invalid (counted)", "invalid (rows - output)", "check"],
    )
    seconds: dict[str, float] = {}
    for racer in racers:
        series = results[(racer.name, "1x")].series
        if not series.ok:
            failed = series.failure
            table.add(racer.name, "FAILED", "", "", "", "", "", "",
                      f"exit {failed.returncode if failed else '?'}")
            continue
        seconds[racer.name] = series.seconds
        low, high = series.spread
        shape = _shape(results[(racer.name, "1x")].output)
        rows = shape[0] if shape else None
        counted = _reported_invalid(racer.name, work, series.runs[-1])
        by_difference = meta["rows"] - rows if rows is not None else None
        good = (shape is not None and rows == expected_out and shape[1] == COLUMNS
                and counted in (None, meta["invalid"]))
        table.add(racer.name, f"{series.seconds:.2f}", f"{low:.2f}-{high:.2f}",
                  f"{size / 1e6 / series.seconds:,.0f}", mib(series.peak_rss),
                  f"{rows:,}" if rows is not None else "missing",
                  f"{counted:,}" if counted is not None else "-",
                  f"{by_difference:,}" if by_difference is not None else "-",
                  "ok" if good else "MISMATCH")
    table.notes += [
        f"check: output rows = {meta['rows']:,} input rows - {meta['invalid']:,} rows the "
        "generator spoiled (one field each, eight ways); a contender's own count of invalid "
        "rows, where it keeps one, equals the spoiled rows; the columns are "
        + ", ".join(COLUMNS),
        "invalid (counted): headrace's `invalid` counter of the validate step (run summary), "
        "the pyarrow and pandas scripts' own count; polars and DuckDB write the valid rows "
        "in one streaming query and count nothing",
        "headrace: `mode: drop` (invalid rows counted, not written: the same work as the "
        "scripts); headrace-dl: `mode: dead_letter`, every invalid row written with its "
        "messages to the dead-letter file",
    ]
    return [table, _ratios(seconds)]


def _ratios(seconds: dict[str, float]) -> Table:
    table = Table("Benchmark 6: headrace throughput relative to each contender (>1: faster)",
                  ["ratio", "value", "goal", "status"])
    for mine in ("headrace", "headrace-dl"):
        for name in ("pyarrow", "duckdb", "polars", "pandas"):
            target = GOALS.get(name) if mine == "headrace" else None
            label = f"{mine} / {name}"
            if mine not in seconds or name not in seconds:
                table.add(label, "n/a", "", "a run failed")
                continue
            value = seconds[name] / seconds[mine]
            table.add(label, ratio(value), f">= {target:.1f}x" if target else "-",
                      goal(value, target) if target else "-")
    return table

