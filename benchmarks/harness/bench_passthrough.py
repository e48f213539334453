"""Benchmark 3: small records through one Python per-record step, against a bare loop."""

from __future__ import annotations

from pathlib import Path

from .contenders import headrace, run_round_robin, script
from .data import row_count, warm_cache
from .report import Table, goal, mib, ratio

GOAL = 0.8  # headrace records/s over the bare loop's, at least


def count_rows(path: Path) -> int | None:
    """Data lines of a CSV with a header (the generated data has no embedded newlines)."""
    if not path.is_file():
        return None
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(16 * 1024 * 1024):
            lines += chunk.count(b"\n")
    return lines - 1


def run(src: Path, work: Path, repeats: int) -> list[Table]:
    print(f"\nbenchmark 3: {src.name}, {repeats} repeat(s)", flush=True)
    warm_cache(src)
    racers = [headrace("headrace", "passthrough.yaml"), script("python loop", "python_loop.py")]
    results = run_round_robin(racers, [("rows", src)], work, repeats, ".csv")
    expected = row_count(src)
    table = Table(f"Benchmark 3: {expected:,} records through a Python per-record step "
                  f"(median of {repeats})",
                  ["contender", "median s", "min-max s", "records/s", "peak RSS MiB",
                   "output rows", "check"])
    rates: dict[str, float] = {}
    for racer in racers:
        outcome = results[(racer.name, "rows")]
        series = outcome.series
        if not series.ok:
            table.add(racer.name, "FAILED", "", "", "", "", f"exit {series.failure.returncode}")
            continue
        rates[racer.name] = expected / series.seconds
        low, high = series.spread
        rows = count_rows(outcome.output)
        table.add(racer.name, f"{series.seconds:.2f}", f"{low:.2f}-{high:.2f}",
                  f"{rates[racer.name]:,.0f}", mib(series.peak_rss),
                  f"{rows:,}" if rows is not None else "missing",
                  "ok" if rows == expected else "MISMATCH")
    if len(rates) == 2:
        value = rates["headrace"] / rates["python loop"]
        table.notes.append(f"headrace / python loop records/s: {ratio(value)} "
                           f"(goal >= {GOAL:.1f}x: {goal(value, GOAL)})")
    else:
        table.notes.append("headrace / python loop: n/a (a run failed)")
    return [table]
