"""Benchmark 7 contender: one DuckDB ``COPY (SELECT ... GROUP BY tail) TO ... (FORMAT
parquet)``.

Usage: aggregate_duckdb.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import duckdb

QUERY = """
COPY (
    SELECT tail,
           count(*) AS n,
           sum(passengers) AS passengers_sum,
           avg(distance) AS distance_mean,
           min(dep_delay) AS delay_min,
           max(dep_delay) AS delay_max
    FROM read_csv(?)
    GROUP BY tail
) TO '{dst}' (FORMAT parquet)
"""


def main(src: str, dst: str) -> None:
    con = duckdb.connect(":memory:")
    con.execute(QUERY.format(dst=dst.replace("'", "''")), [src])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
