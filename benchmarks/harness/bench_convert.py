"""Benchmark 1: CSV -> filter -> derive -> select -> Parquet, headrace against four others."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from .contenders import headrace, run_round_robin, script
from .data import warm_cache
from .report import Table, goal, mib, ratio

COLUMNS = ["id", "dep_time", "carrier", "flight", "route", "delay_hours"]
GOALS = {"pyarrow": 1.0, "duckdb": 0.7}  # headrace throughput / theirs, at least


def contenders() -> list:
    return [
        headrace("headrace", "flights.yaml"),
        script("pyarrow", "pyarrow_stream.py"),
        script("pandas", "pandas_chunks.py"),
        script("polars", "polars_lazy.py"),
        script("duckdb", "duckdb_copy.py"),
    ]


def _shape(path: Path) -> tuple[int, list[str]] | None:
    if not path.is_file():
        return None
    meta = pq.ParquetFile(path)
    return meta.metadata.num_rows, meta.schema_arrow.names


def run(src: Path, work: Path, repeats: int) -> list[Table]:
    print(f"\nbenchmark 1: {src.name}, {repeats} repeat(s)", flush=True)
    warm_cache(src)
    racers = contenders()
    results = run_round_robin(racers, [("1x", src)], work, repeats, ".parquet")
    size = src.stat().st_size
    shapes = {c.name: _shape(results[(c.name, "1x")].output) for c in racers}
    counts = Counter(s[0] for s in shapes.values() if s is not None)
    expected = counts.most_common(1)[0][0] if counts else None

    table = Table(
        f"Benchmark 1: CSV -> filter -> derive -> select -> Parquet "
        f"({size / 1e6:,.0f} MB input, median of {repeats})",
        ["contender", "median s", "min-max s", "MB/s", "peak RSS MiB", "output rows", "check"],
    )
    seconds: dict[str, float] = {}
    for racer in racers:
        series = results[(racer.name, "1x")].series
        if not series.ok:
            failed = series.failure
            table.add(racer.name, "FAILED", "", "", "", "", f"exit {failed.returncode}")
            continue
        seconds[racer.name] = series.seconds
        low, high = series.spread
        shape = shapes[racer.name]
        rows = shape[0] if shape else None
        check = "ok" if shape and rows == expected and shape[1] == COLUMNS else "MISMATCH"
        table.add(racer.name, f"{series.seconds:.2f}", f"{low:.2f}-{high:.2f}",
                  f"{size / 1e6 / series.seconds:,.0f}", mib(series.peak_rss),
                  f"{rows:,}" if rows is not None else "missing", check)
    table.notes.append("check: output row count equals the most common count among "
                       f"contenders ({expected:,} rows) and the columns are "
                       f"{', '.join(COLUMNS)}" if expected is not None else
                       "check: no output to compare")
    return [table, _ratios(seconds)]


def _ratios(seconds: dict[str, float]) -> Table:
    table = Table("Benchmark 1: headrace throughput relative to each contender (>1: faster)",
                  ["headrace / contender", "ratio", "goal", "status"])
    mine = seconds.get("headrace")
    for name in ("pyarrow", "duckdb", "polars", "pandas"):
        theirs = seconds.get(name)
        target = GOALS.get(name)
        if mine is None or theirs is None:
            table.add(f"headrace / {name}", "n/a", "", "a run failed")
            continue
        value = theirs / mine
        table.add(f"headrace / {name}", ratio(value),
                  f">= {target:.1f}x" if target else "-",
                  goal(value, target) if target else "-")
    return table
