"""Benchmark 7 contender: pandas ``read_csv(chunksize=...)``, ``groupby`` per chunk,
partial results (count, sums, minima, maxima) merged at the end.

Usage: aggregate_pandas.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import pandas as pd

CHUNK_ROWS = 500_000
COLUMNS = ["tail", "passengers", "distance", "dep_delay"]


def main(src: str, dst: str) -> None:
    partials = []
    for chunk in pd.read_csv(src, chunksize=CHUNK_ROWS, usecols=COLUMNS):
        grouped = chunk.groupby("tail", sort=False)
        partials.append(pd.DataFrame({
            "n": grouped.size(),
            "passengers_sum": grouped["passengers"].sum(),
            "distance_sum": grouped["distance"].sum(),
            "distance_count": grouped["distance"].count(),
            "delay_min": grouped["dep_delay"].min(),
            "delay_max": grouped["dep_delay"].max(),
        }))
    merged = pd.concat(partials).groupby(level=0).agg({
        "n": "sum", "passengers_sum": "sum", "distance_sum": "sum", "distance_count": "sum",
        "delay_min": "min", "delay_max": "max",
    })
    out = pd.DataFrame({
        "tail": merged.index,
        "n": merged["n"].to_numpy(),
        "passengers_sum": merged["passengers_sum"].to_numpy(),
        "distance_mean": (merged["distance_sum"] / merged["distance_count"]).to_numpy(),
        "delay_min": merged["delay_min"].astype("Int64").to_numpy(),
        "delay_max": merged["delay_max"].astype("Int64").to_numpy(),
    })
    out.to_parquet(dst, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
