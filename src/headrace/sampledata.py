"""Realistic flight-like sample data of any size, for examples, tests and benchmarks.

Columns: ints, floats, strings, timestamps and some nulls. Deterministic for a given seed.
Run ``python -m headrace.sampledata OUT.csv --size 1GB``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

CARRIERS = np.array(["AA", "DL", "UA", "WN", "B6", "AS", "NK", "F9", "HA", "G4"])
AIRPORTS = np.array(["ATL", "LAX", "ORD", "DFW", "DEN", "JFK", "SFO", "SEA", "LAS", "MCO",
                     "EWR", "CLT", "PHX", "IAH", "MIA", "BOS", "MSP", "DTW", "FLL", "PHL"])
BYTES_PER_ROW = 62  # measured average of the CSV text below


def flights_table(rows: int, seed: int = 0, start_id: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed + start_id)
    origin = rng.integers(0, len(AIRPORTS), rows)
    dest = (origin + rng.integers(1, len(AIRPORTS), rows)) % len(AIRPORTS)
    delay = np.round(rng.gamma(1.2, 25.0, rows) - 15.0).astype(np.int64)
    delay_missing = rng.random(rows) < 0.02  # cancelled flights have no delay
    base = np.datetime64("2024-01-01T00:00:00", "s")
    dep_time = base + rng.integers(0, 365 * 24 * 3600, rows).astype("timedelta64[s]")
    return pa.table({
        "id": np.arange(start_id, start_id + rows, dtype=np.int64),
        "dep_time": pa.array(dep_time, type=pa.timestamp("s")),
        "carrier": CARRIERS[rng.integers(0, len(CARRIERS), rows)],
        "flight": rng.integers(1, 7000, rows),
        "origin": AIRPORTS[origin],
        "dest": AIRPORTS[dest],
        "dep_delay": pa.array(delay, mask=delay_missing),
        "distance": np.round(rng.uniform(150, 2800, rows), 1),
        "passengers": rng.integers(20, 300, rows),
    })


def parse_size(text: str) -> int:
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit):
            return int(float(upper[: -len(unit)]) * factor)
    return int(upper)


def write_flights_csv(path: Path, *, rows: int | None = None, size: int | None = None,
                      seed: int = 0, chunk: int = 500_000) -> int:
    """Write ``rows`` rows (or about ``size`` bytes) of flights to ``path``; returns rows."""
    total = rows if rows is not None else max(1, (size or 0) // BYTES_PER_ROW)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    written = 0
    with pacsv.CSVWriter(str(tmp), flights_table(0).schema) as writer:
        while written < total:
            n = min(chunk, total - written)
            writer.write_table(flights_table(n, seed, start_id=written))
            written += n
    tmp.replace(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--rows", type=int)
    group.add_argument("--size", type=parse_size, help="e.g. 500MB, 1GB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = write_flights_csv(args.out, rows=args.rows, size=args.size, seed=args.seed)
    print(f"wrote {n:,} rows, {args.out.stat().st_size / 1024**2:,.1f} MiB to {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
