"""Dirty CSV at the speed of a clean one? The same flights CSV clean and with a share of
lines whose ``dep_delay`` is not a number, each run through ``headrace run`` (csv -> filter
-> derive -> Parquet), alternating; prints the median seconds and the dirty/clean ratio
(goal: 5% bad lines within 1.5x of the clean run) and checks that every bad line is a dead
letter naming its line, column and value.

    .venv/bin/python benchmarks/bench_dirty_csv.py                 # 400,000 rows, 0.1% and 5%
    .venv/bin/python benchmarks/bench_dirty_csv.py --rows 1000000 --bad 0.05 --repeat 5

Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = """version: 1
name: {name}
source: {{use: csv, path: {data}, types: {{dep_delay: int64}}}}
steps:
  - {{use: filter, where: "dep_delay > 0"}}
  - use: derive
    columns:
      delay_hours: "dep_delay / 60.0"
sink: {{use: parquet, path: out/{name}.parquet}}
runtime: {{max_failures: 100%}}
"""


def make_dirty(clean: Path, target: Path, share: float, seed: int = 7) -> set[int]:
    """A copy of ``clean`` with ``share`` of its lines' dep_delay replaced by text; returns
    their line numbers."""
    rng = random.Random(seed)
    bad: set[int] = set()
    with open(clean, encoding="utf-8") as src, open(target, "w", encoding="utf-8") as out:
        header = src.readline()
        column = header.strip().split(",").index('"dep_delay"')
        out.write(header)
        for number, line in enumerate(src, start=2):
            if rng.random() < share:
                fields = line.rstrip("\n").split(",")
                fields[column] = f"x{number}"
                out.write(",".join(fields) + "\n")
                bad.add(number)
            else:
                out.write(line)
    return bad


def run(folder: Path, name: str, data: Path) -> float:
    pipeline = folder / f"{name}.yaml"
    pipeline.write_text(PIPELINE.format(name=name, data=data.name))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "headrace", "run", str(pipeline), "-q"],
                   check=False, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--bad", type=float, action="append")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shares = args.bad or [0.001, 0.05]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clean = folder / "clean.csv"
        subprocess.run([sys.executable, "-m", "headrace.sampledata", str(clean), "--rows",
                        str(args.rows)], check=True, capture_output=True)
        dirty = {share: folder / f"dirty{share}.csv" for share in shares}
        expected = {share: make_dirty(clean, path, share) for share, path in dirty.items()}
        times: dict[str, list[float]] = {"clean": []}
        for _ in range(args.repeat):
            times["clean"].append(run(folder, "clean", clean))
            for share, path in dirty.items():
                times.setdefault(f"{share:.1%}", []).append(run(folder, f"d{share}", path))
        base = statistics.median(times["clean"])
        print(f"{args.rows:,} rows, median of {args.repeat}")
        for label, values in times.items():
            median = statistics.median(values)
            print(f"  {label:>6}: {median:7.2f} s  {median / base:6.2f}x clean")
        for share in shares:
            letters = [json.loads(line) for line in
                       (folder / "out" / f"d{share}.dead.jsonl").read_text().splitlines()]
            lines = {e["position"]["line"] for e in letters}
            named = all(f"x{e['position']['line']}" in e["message"] for e in letters)
            print(f"  {share:.1%}: {len(letters):,} dead letters, lines exact: "
                  f"{lines == expected[share]}, value named: {named}")


if __name__ == "__main__":
    main()
