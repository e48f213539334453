"""Benchmark 6 contender: a polars lazy query, the checks in one ``filter``, streamed to
Parquet with ``sink_parquet``.

Usage: validate_polars.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import polars as pl

CARRIERS = ["AA", "DL", "UA", "WN", "B6", "AS", "NK", "F9", "HA", "G4"]


def valid() -> pl.Expr:
    delay = pl.col("dep_delay")
    return (
        (pl.col("id") >= 0)
        & pl.col("dep_time").is_not_null()
        & pl.col("carrier").is_in(CARRIERS)
        & pl.col("flight").is_between(1, 9999)
        & pl.col("origin").str.contains(r"^[A-Z]{3}$")
        & (pl.col("dest").str.len_chars() <= 3)
        & (delay.is_null() | delay.is_between(-60, 1440))
        & (pl.col("distance") > 0) & (pl.col("distance") <= 5000)
    ).fill_null(False)


def main(src: str, dst: str) -> None:
    (
        pl.scan_csv(src, try_parse_dates=True)
        .filter(valid())
        .with_columns(
            delay_hours=pl.col("dep_delay") / 60.0,
            route=pl.concat_str([pl.col("origin"), pl.col("dest")], separator="-"),
        )
        .sink_parquet(dst)
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
