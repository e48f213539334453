"""Benchmark 3 baseline: a bare Python loop over ``csv.DictReader`` calling the same
per-record function as the headrace pipeline, written with ``csv.DictWriter``.

Usage: python_loop.py INPUT.csv OUTPUT.csv
"""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


def main(src: str, dst: str) -> None:
    sys.path.insert(0, str(PIPELINES))
    touch = importlib.import_module("passthrough_fn").touch
    with open(src, newline="", encoding="utf-8") as fin, \
            open(dst, "w", newline="", encoding="utf-8") as fout:
        reader = csv.DictReader(fin)
        writer = csv.DictWriter(fout, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            row["flight"] = int(row["flight"])
            writer.writerow(touch(row))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
