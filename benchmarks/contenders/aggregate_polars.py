"""Benchmark 7 contender: a polars lazy ``group_by`` streamed to Parquet with
``sink_parquet`` (the streaming engine).

Usage: aggregate_polars.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import polars as pl


def main(src: str, dst: str) -> None:
    (
        pl.scan_csv(src)
        .group_by("tail")
        .agg(
            n=pl.len(),
            passengers_sum=pl.col("passengers").sum(),
            distance_mean=pl.col("distance").mean(),
            delay_min=pl.col("dep_delay").min(),
            delay_max=pl.col("dep_delay").max(),
        )
        .sink_parquet(dst)
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
