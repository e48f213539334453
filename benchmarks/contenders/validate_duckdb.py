"""Benchmark 6 contender: one DuckDB ``COPY (SELECT ... WHERE <checks>) TO ... (FORMAT
parquet)``.

Usage: validate_duckdb.py INPUT.csv OUTPUT.parquet
"""

from __future__ import annotations

import sys

import duckdb

QUERY = """
COPY (
    SELECT *,
           dep_delay / 60.0 AS delay_hours,
           origin || '-' || dest AS route
    FROM read_csv(?)
    WHERE coalesce(
        id >= 0
        AND dep_time IS NOT NULL
        AND carrier IN ('AA', 'DL', 'UA', 'WN', 'B6', 'AS', 'NK', 'F9', 'HA', 'G4')
        AND flight BETWEEN 1 AND 9999
        AND regexp_full_match(origin, '[A-Z]{{3}}')
        AND length(dest) <= 3
        AND (dep_delay IS NULL OR dep_delay BETWEEN -60 AND 1440)
        AND distance > 0 AND distance <= 5000,
        false)
) TO '{dst}' (FORMAT parquet)
"""


def main(src: str, dst: str) -> None:
    con = duckdb.connect(":memory:")
    con.execute(QUERY.format(dst=dst.replace("'", "''")), [src])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
