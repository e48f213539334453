"""Benchmark 7 contender: pyarrow streaming, ``Table.group_by`` per block, partials merged.

Usage: aggregate_pyarrow.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

BLOCK_SIZE = 8 * 1024 * 1024  # the same block size as headrace's csv source
# (partial column, how a block computes it, how partials merge)
PARTIALS = [
    ("n", ([], "count_all"), "sum"),
    ("passengers_sum", ("passengers", "sum"), "sum"),
    ("distance_sum", ("distance", "sum"), "sum"),
    ("distance_count", ("distance", "count"), "sum"),
    ("delay_min", ("dep_delay", "min"), "min"),
    ("delay_max", ("dep_delay", "max"), "max"),
]
NAMES = [name for name, _, _ in PARTIALS]


def _named(table: pa.Table) -> pa.Table:
    """``group_by`` output (the key ``tail`` and one column per aggregate, in the order
    asked for) with the aggregates renamed to ``NAMES``."""
    aggregates = [name for name in table.column_names if name != "tail"]
    return pa.table({"tail": table["tail"],
                     **{new: table[old] for new, old in zip(NAMES, aggregates, strict=True)}})


def partial(batch: pa.RecordBatch) -> pa.Table:
    table = pa.Table.from_batches([batch])
    return _named(table.group_by("tail").aggregate([spec for _, spec, _ in PARTIALS]))


def merge(parts: pa.Table) -> pa.Table:
    return _named(parts.group_by("tail").aggregate([(name, how) for name, _, how in PARTIALS]))


def main(src: str, dst: str) -> None:
    reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE))
    merged: pa.Table | None = None
    for batch in reader:
        part = partial(batch)
        merged = part if merged is None else merge(pa.concat_tables([merged, part]))
    assert merged is not None
    out = pa.table({
        "tail": merged["tail"],
        "n": merged["n"],
        "passengers_sum": merged["passengers_sum"],
        "distance_mean": pc.divide(merged["distance_sum"],
                                   pc.cast(merged["distance_count"], pa.float64())),
        "delay_min": merged["delay_min"],
        "delay_max": merged["delay_max"],
    })
    pq.write_table(out, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
