"""Benchmark 1 contender: pandas ``read_csv(chunksize=...)``, one Parquet row group per chunk.

Usage: pandas_chunks.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK_ROWS = 500_000


def transform(chunk: pd.DataFrame) -> pd.DataFrame:
    kept = chunk[chunk["dep_delay"] > 60]
    return pd.DataFrame({
        "id": kept["id"],
        "dep_time": pd.to_datetime(kept["dep_time"], format="%Y-%m-%d %H:%M:%S"),
        "carrier": kept["carrier"],
        "flight": kept["flight"],
        "route": kept["origin"] + "-" + kept["dest"],
        "delay_hours": kept["dep_delay"] / 60.0,
    })


def main(src: str, dst: str) -> None:
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in pd.read_csv(src, chunksize=CHUNK_ROWS):
            table = pa.Table.from_pandas(transform(chunk), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(dst, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
