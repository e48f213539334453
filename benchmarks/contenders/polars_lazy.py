"""Benchmark 1 contender: a polars lazy query streamed to Parquet with ``sink_parquet``.

Usage: polars_lazy.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import polars as pl


def main(src: str, dst: str) -> None:
    (
        pl.scan_csv(src, try_parse_dates=True)
        .filter(pl.col("dep_delay") > 60)
        .with_columns(
            delay_hours=pl.col("dep_delay") / 60.0,
            route=pl.concat_str([pl.col("origin"), pl.col("dest")], separator="-"),
        )
        .select("id", "dep_time", "carrier", "flight", "route", "delay_hours")
        .sink_parquet(dst)
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
