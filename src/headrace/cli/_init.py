"""``headrace init``: a commented, runnable example pipeline and its data."""

from __future__ import annotations

from pathlib import Path

from headrace.errors import ConfigError
from headrace.sampledata import write_flights_csv

PIPELINE = """\
# A headrace pipeline: read flights, keep the delayed ones, derive a column, write Parquet.
# Run it:       headrace run {name}
# Check it:     headrace validate {name}
version: 1
name: delayed-flights
source:
  use: csv                      # plugin name; `headrace plugins list` shows them all
  path: data/flights.csv        # paths are relative to this file
steps:
  - use: filter                 # SQL condition over the record's columns
    where: "dep_delay > 60"
  - use: derive                 # new columns from SQL expressions
    columns:
      delay_hours: "dep_delay / 60.0"
      route: "origin || '-' || dest"
  - use: select
    columns: [id, dep_time, carrier, flight, route, delay_hours]
sink:
  use: parquet
  path: out/delayed.parquet     # written under a temporary name, renamed when complete
# dead_letter:
#   path: out/dead.jsonl        # default: next to the sink, delayed.dead.jsonl
# runtime:
#   max_failures: 0             # dead-lettered records allowed before exit 1 (or "1%")
"""


def write_example(directory: Path, rows: int = 100_000) -> list[Path]:
    pipeline = directory / "pipeline.yaml"
    data = directory / "data" / "flights.csv"
    existing = [p for p in (pipeline, data) if p.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists; headrace init does not overwrite files",
                          hint="choose an empty folder: headrace init DIR")
    directory.mkdir(parents=True, exist_ok=True)
    pipeline.write_text(PIPELINE.format(name=pipeline), encoding="utf-8")
    write_flights_csv(data, rows=rows)
    return [pipeline, data]
