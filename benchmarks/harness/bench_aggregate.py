"""Benchmark 7: CSV -> aggregate by a key with 10,000 groups (count, sum, mean, min, max)
-> Parquet, headrace's ``aggregate`` step against pyarrow, pandas, polars and DuckDB.

The input is benchmark 6's (``bench_validate.input_csv``), spoiled rows included: they are
just numbers here. Every output is compared with DuckDB's, group by group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .bench_validate import GROUPS, headrace_pipeline, input_meta
from .contenders import Contender, run_round_robin, script
from .data import warm_cache
from .report import Table, mib, ratio

COLUMNS = ["tail", "n", "passengers_sum", "distance_mean", "delay_min", "delay_max"]
EXACT = ["n", "passengers_sum", "delay_min", "delay_max"]
MEAN_RTOL = 1e-9  # sums in a different order differ in the last bits
REFERENCE = "duckdb"


def contenders() -> list[Contender]:
    return [
        headrace_pipeline("headrace", "headrace_aggregate.yaml"),
        script("pyarrow", "aggregate_pyarrow.py"),
        script("pandas", "aggregate_pandas.py"),
        script("polars", "aggregate_polars.py"),
        script("duckdb", "aggregate_duckdb.py"),
    ]


def _load(path: Path) -> pa.Table | None:
    if not path.is_file():
        return None
    table = pq.read_table(path)
    if sorted(table.column_names) != sorted(COLUMNS):
        return table
    return table.select(COLUMNS).sort_by("tail")


def compare(table: pa.Table | None, reference: pa.Table | None) -> str:
    """'ok', or what differs from the reference output."""
    if table is None:
        return "missing"
    if table.column_names != COLUMNS:
        return f"columns {table.column_names}"
    if table.num_rows != GROUPS:
        return f"{table.num_rows:,} groups"
    if reference is None:
        return "no reference"
    if table["tail"].to_pylist() != reference["tail"].to_pylist():
        return "other keys"
    for name in EXACT:
        mine = pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False)
        theirs = pc.cast(reference[name], pa.float64()).to_numpy(zero_copy_only=False)
        if not np.array_equal(mine, theirs, equal_nan=True):
            return f"{name} differs in {int(np.sum(mine != theirs)):,} groups"
    mine = table["distance_mean"].to_numpy(zero_copy_only=False)
    theirs = reference["distance_mean"].to_numpy(zero_copy_only=False)
    if not np.allclose(mine, theirs, rtol=MEAN_RTOL, atol=0.0):
        return f"distance_mean differs by up to {np.max(np.abs(mine / theirs - 1)):.1e}"
    return "ok"


def run(src: Path, work: Path, repeats: int) -> list[Table]:
    meta = input_meta(src)
    print(f"\nbenchmark 7: {src.name} ({meta['rows']:,} rows), {repeats} repeat(s)",
          flush=True)
    warm_cache(src)
    racers = contenders()
    results = run_round_robin(racers, [("1x", src)], work, repeats, ".parquet")
    size = src.stat().st_size
    outputs = {c.name: _load(results[(c.name, "1x")].output) for c in racers}
    reference = outputs.get(REFERENCE)

    table = Table(
        f"Benchmark 7: CSV -> aggregate by tail ({GROUPS:,} groups; count, sum, mean, "
        f"min, max) -> Parquet ({size / 1e6:,.0f} MB, {meta['rows']:,} rows, "
        f"median of {repeats})",
        ["contender", "median s", "min-max s", "MB/s", "peak RSS MiB", "groups",
         f"same as {REFERENCE}"],
    )
    seconds: dict[str, float] = {}
    for racer in racers:
        series = results[(racer.name, "1x")].series
        if not series.ok:
            failed = series.failure
            table.add(racer.name, "FAILED", "", "", "", "",
                      f"exit {failed.returncode if failed else '?'}")
            continue
        seconds[racer.name] = series.seconds
        low, high = series.spread
        output = outputs[racer.name]
        table.add(racer.name, f"{series.seconds:.2f}", f"{low:.2f}-{high:.2f}",
                  f"{size / 1e6 / series.seconds:,.0f}", mib(series.peak_rss),
                  f"{output.num_rows:,}" if output is not None else "missing",
                  "reference" if racer.name == REFERENCE else compare(output, reference))
    table.notes.append(
        f"check: every output has the {GROUPS:,} keys and, group by group, the same count, "
        f"sum, min and max as DuckDB's and a mean within a relative {MEAN_RTOL:g}")
    return [table, _ratios(seconds)]


def _ratios(seconds: dict[str, float]) -> Table:
    table = Table("Benchmark 7: headrace throughput relative to each contender (>1: faster)",
                  ["headrace / contender", "ratio"])
    for name in ("pyarrow", "duckdb", "polars", "pandas"):
        if "headrace" not in seconds or name not in seconds:
            table.add(f"headrace / {name}", "n/a (a run failed)")
            continue
        table.add(f"headrace / {name}", ratio(seconds[name] / seconds["headrace"]))
    return table
