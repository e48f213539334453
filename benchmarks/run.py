"""headrace benchmark suite: one command, ratios against baselines measured in the same run.

Run from the repository root:  .venv/bin/python benchmarks/run.py [--size 1GB] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import (
    bench_aggregate,
    bench_convert,
    bench_http,
    bench_memory,
    bench_overhead,
    bench_passthrough,
    bench_validate,
    data,
)
from harness.report import Table, machine_info

from headrace.sampledata import parse_size

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
QUICK_SIZE = 100 * 1024**2
KEEP_LIMIT = 2 * 1024**3  # a 5x input bigger than this is deleted after the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=None,
                        help="1x input of benchmarks 1, 2, 4, 6, 7 (default 1GB; --quick: 100MB)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per contender, median reported (default 3; --quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 100MB input, shorter HTTP runs (benchmark 5)")
    parser.add_argument("--rows", type=int, default=2_000_000,
                        help="records for benchmarks 3 and 4 (default 2,000,000)")
    parser.add_argument("--only", type=int, choices=(1, 2, 3, 4, 5, 6, 7), action="append",
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the 5x input even when it is over 2 GiB")
    args = parser.parse_args(argv)
    args.size = args.size or (QUICK_SIZE if args.quick else 1024**3)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.only = set(args.only or (1, 2, 3, 4, 5, 6, 7))
    return args


def command_line() -> str:
    """How this run was started, with paths relative to the current folder when possible."""
    def rel(path: str) -> str:
        relative = os.path.relpath(os.path.abspath(path))
        return relative if not relative.startswith("..") else Path(path).name

    return shlex.join([rel(sys.executable), rel(sys.argv[0]), *sys.argv[1:]])


def git_revision() -> str:
    """The commit being measured, and whether src/ has uncommitted changes."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=BENCH_DIR.parent, capture_output=True,
                              text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + (" (+ uncommitted changes in src/)" if git("status", "--porcelain", "src")
                     else "")


def header(started: dt.datetime, revision: str, revision_after: str | None = None) -> str:
    if revision_after is not None and revision_after != revision:
        revision += f"; changed to {revision_after} during the run"
    lines = ["# headrace benchmark results", "",
             f"- command: `{command_line()}`",
             f"- date: {started.isoformat(timespec='seconds')}",
             f"- headrace commit: {revision}"]
    lines += [f"- {key}: {value}" for key, value in machine_info()]
    lines += ["", "Times are wall-clock seconds of a whole subprocess (interpreter start-up and "
              "imports included); ratios compare contenders measured in this same run."]
    return "\n".join(lines)


def run_benchmarks(args: argparse.Namespace, work: Path) -> list[Table]:
    tables: list[Table] = []
    small = data.flights_csv(size=args.size) if args.only & {1, 2, 4} else None
    if 1 in args.only and small is not None:
        tables += _show(bench_convert.run(small, work, args.repeat))
    if 2 in args.only and small is not None:
        big = data.flights_csv(size=5 * args.size)
        try:
            tables += _show(bench_memory.run(small, big, work, args.repeat))
        finally:
            if big.stat().st_size > KEEP_LIMIT and not args.keep_data:
                print(f"deleting {big.name} (over 2 GiB; --keep-data keeps it)")
                data.remove(big)
    if 3 in args.only:
        rows = data.flights_csv(rows=args.rows)
        tables += _show(bench_passthrough.run(rows, work, args.repeat))
    if 4 in args.only and small is not None:
        rows = data.flights_csv(rows=args.rows)
        tables += _show(bench_overhead.run(small, rows, work, args.repeat))
    if 5 in args.only:
        tables += bench_http.run(work, args.repeat, quick=args.quick, show=_show)
    checked = bench_validate.input_csv(args.size) if args.only & {6, 7} else None
    if 6 in args.only and checked is not None:
        tables += _show(bench_validate.run(checked, work, args.repeat))
    if 7 in args.only and checked is not None:
        tables += _show(bench_aggregate.run(checked, work, args.repeat))
    return tables


def _show(tables: list[Table]) -> list[Table]:
    for table in tables:
        print("\n" + table.text(), flush=True)
    return tables


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, revision = dt.datetime.now().astimezone(), git_revision()
    print(header(started, revision).replace("`", ""), flush=True)
    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as work:
        tables = run_benchmarks(args, Path(work))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    text = header(started, revision, git_revision())
    report = "\n\n".join([text, *(t.markdown() for t in tables)]) + "\n"
    (OUT_DIR / "results.md").write_text(report, encoding="utf-8")
    print(f"\nwrote {(OUT_DIR / 'results.md').relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
