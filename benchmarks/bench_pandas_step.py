"""What the frame steps cost over the same function on the same batches without headrace.

Usage: .venv/bin/python benchmarks/bench_pandas_step.py [--rows N] [--batch N] [--repeat N]

Every contender runs one function over the same Arrow batches (flights from
``headrace.sampledata``, a null in every 20th ``dep_delay``) and ends with Arrow again, as a
step must; times are the best of ``--repeat`` passes, in one process, after a warm-up pass.
The baseline is a bare pandas loop: ``to_pandas()`` (numpy dtypes), the function,
``Table.from_pandas``. Ratios below 1 are faster than that loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from headrace.builtins.frames import NumpyStep, PandasStep, SqlStep
from headrace.plugin import Batch, PluginContext, Step
from headrace.sampledata import flights_table


def score(df: pd.DataFrame) -> pd.DataFrame:
    """A typical vectorised step: a derived column and a filter."""
    df["delay_per_100km"] = df["dep_delay"] / df["distance"] * 100
    return df[df["delay_per_100km"] > 0.5]


def score_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same column as a numpy function (no filter: numpy steps keep rows)."""
    return {"delay_per_100km": columns["dep_delay"] / columns["distance"] * 100}


def batches(rows: int, batch: int) -> list[pa.Table]:
    table = flights_table(rows, seed=1)
    delays = table.column("dep_delay").to_pylist()
    with_nulls = pa.array([None if i % 20 == 0 else d for i, d in enumerate(delays)])
    table = table.set_column(table.schema.get_field_index("dep_delay"), "dep_delay", with_nulls)
    return [table.slice(start, batch) for start in range(0, rows, batch)]


def bare_loop(tables: list[pa.Table]) -> int:
    return sum(pa.Table.from_pandas(score(t.to_pandas()), preserve_index=False).num_rows
               for t in tables)


def bare_loop_arrow_dtypes(tables: list[pa.Table]) -> int:
    return sum(pa.Table.from_pandas(score(t.to_pandas(types_mapper=pd.ArrowDtype)),
                                    preserve_index=False).num_rows for t in tables)


def through(step: Step) -> Callable[[list[pa.Table]], int]:
    def run(tables: list[pa.Table]) -> int:
        ids = np.arange(tables[0].num_rows)
        return sum(step.process(Batch.from_arrow(t, row_ids=ids[: t.num_rows])).batch.num_rows
                   for t in tables)
    return run


def best(fn: Callable[[list[pa.Table]], int], tables: list[pa.Table], repeat: int) -> float:
    fn(tables)  # warm-up: imports, DuckDB connection, pandas caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(tables)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=65_536)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    context = PluginContext(plugin_id="bench", base_dir=Path.cwd())
    here = "__main__"
    sql = "SELECT *, dep_delay / distance * 100 AS delay_per_100km FROM batch " \
          "WHERE dep_delay / distance * 100 > 0.5"
    contenders: list[tuple[str, Callable[[list[pa.Table]], int]]] = [
        ("bare pandas loop (to_pandas, fn, from_pandas)", bare_loop),
        ("bare pandas loop, ArrowDtype columns", bare_loop_arrow_dtypes),
        ("pandas step, dtype_backend: pyarrow (default)", through(PandasStep(
            PandasStep.Options(function=f"{here}:score"), context))),
        ("pandas step, dtype_backend: numpy", through(PandasStep(
            PandasStep.Options(function=f"{here}:score", dtype_backend="numpy"), context))),
        ("numpy step (same column, no filter)", through(NumpyStep(
            NumpyStep.Options(function=f"{here}:score_columns"), context))),
        ("sql step (same column and filter)", through(SqlStep(
            SqlStep.Options(query=sql), context))),
    ]
    tables = batches(args.rows, args.batch)
    print(f"{args.rows:,} rows in {len(tables)} batches of {args.batch:,}; best of "
          f"{args.repeat}; python {sys.version.split()[0]}, pandas {pd.__version__}, "
          f"pyarrow {pa.__version__}, numpy {np.__version__}")
    baseline = None
    print(f"{'contender':<48} {'seconds':>8} {'ratio':>6}")
    for name, fn in contenders:
        seconds = best(fn, tables, args.repeat)
        baseline = baseline or seconds
        print(f"{name:<48} {seconds:>8.3f} {seconds / baseline:>6.2f}")


if __name__ == "__main__":
    main()
