"""Benchmark 2: headrace's peak memory on the 1x input and on a 5x input."""

from __future__ import annotations

from pathlib import Path

from .contenders import headrace, run_round_robin
from .data import warm_cache
from .report import Table, goal, mib

GOAL_PERCENT = 10.0


def run(small: Path, big: Path, work: Path, repeats: int) -> list[Table]:
    print(f"\nbenchmark 2: {small.name} and {big.name}, {repeats} repeat(s)", flush=True)
    racer = headrace("headrace", "flights.yaml")
    jobs = [("1x", small), ("5x", big)]
    for _, path in jobs:
        warm_cache(path)
    results = run_round_robin([racer], jobs, work, repeats, ".parquet")
    table = Table(f"Benchmark 2: headrace peak memory, 1x vs 5x input (median of {repeats})",
                  ["input", "size MB", "median s", "MB/s", "peak RSS MiB", "max peak RSS MiB"])
    peaks: dict[str, int] = {}
    for label, path in jobs:
        series = results[(racer.name, label)].series
        size = path.stat().st_size
        if not series.ok:
            table.add(label, f"{size / 1e6:,.0f}", "FAILED", "", "", "")
            continue
        peaks[label] = series.peak_rss
        table.add(label, f"{size / 1e6:,.0f}", f"{series.seconds:.2f}",
                  f"{size / 1e6 / series.seconds:,.0f}", mib(series.peak_rss),
                  mib(max(r.peak_rss for r in series.runs)))
    if len(peaks) == 2:
        growth = (peaks["5x"] - peaks["1x"]) / peaks["1x"] * 100
        table.notes.append(f"peak RSS growth 1x -> 5x: {growth:+.1f}% "
                           f"(goal <= {GOAL_PERCENT:.0f}%: "
                           f"{goal(growth, GOAL_PERCENT, at_least=False)})")
    else:
        table.notes.append("peak RSS growth: n/a (a run failed)")
    return [table]
