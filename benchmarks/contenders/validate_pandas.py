"""Benchmark 6 contender: pandas ``read_csv(chunksize=...)``, the checks as column
expressions, one Parquet row group per chunk. Prints ``invalid=N`` on stderr.

Usage: validate_pandas.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK_ROWS = 500_000
CARRIERS = ["AA", "DL", "UA", "WN", "B6", "AS", "NK", "F9", "HA", "G4"]


def valid(chunk: pd.DataFrame) -> pd.Series:
    delay = chunk["dep_delay"]
    return (
        (chunk["id"] >= 0)
        & chunk["dep_time"].notna()
        & chunk["carrier"].isin(CARRIERS)
        & chunk["flight"].between(1, 9999)
        & chunk["origin"].str.fullmatch(r"[A-Z]{3}", na=False)
        & (chunk["dest"].str.len() <= 3)
        & (delay.isna() | delay.between(-60, 1440))
        & (chunk["distance"] > 0) & (chunk["distance"] <= 5000)
    )


def main(src: str, dst: str) -> None:
    writer: pq.ParquetWriter | None = None
    invalid = 0
    try:
        for chunk in pd.read_csv(src, chunksize=CHUNK_ROWS):
            chunk["dep_time"] = pd.to_datetime(chunk["dep_time"], format="%Y-%m-%d %H:%M:%S")
            ok = valid(chunk)
            invalid += int((~ok).sum())
            kept = chunk[ok].assign(delay_hours=lambda df: df["dep_delay"] / 60.0,
                                    route=lambda df: df["origin"] + "-" + df["dest"])
            table = pa.Table.from_pandas(kept, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(dst, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    print(f"invalid={invalid}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
