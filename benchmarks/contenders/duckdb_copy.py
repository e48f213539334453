"""Benchmark 1 contender: one DuckDB ``COPY (SELECT ...) TO ... (FORMAT parquet)``.

Usage: duckdb_copy.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import duckdb

QUERY = """
COPY (
    SELECT id, dep_time, carrier, flight,
           origin || '-' || dest AS route,
           dep_delay / 60.0 AS delay_hours
    FROM read_csv(?)
    WHERE dep_delay > 60
) TO '{dst}' (FORMAT parquet)
"""


def main(src: str, dst: str) -> None:
    con = duckdb.connect(":memory:")
    con.execute(QUERY.format(dst=dst.replace("'", "''")), [src])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
