"""Benchmark 4: what the production runtime costs. The pipelines of benchmarks 1 and 3 with
checkpoints, retries, breakers, timeouts and metrics on ("full"), against the same pipelines
with them off ("bare"); a second "full" variant checkpoints every second, so a Parquet output
is written as several segments and assembled into one file at the end."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from headrace.config import RuntimeConfig

from .bench_convert import COLUMNS
from .bench_passthrough import count_rows
from .contenders import Contender, headrace, run_round_robin
from .data import row_count, warm_cache
from .measure import Series
from .report import Table, goal, mib, ratio

GOAL = 0.9  # full throughput / bare throughput, at least

BARE = ["--set", "runtime.checkpoint=false", "--set", "runtime.retry=false"]
FULL = ["--set", "runtime.checkpoint=true", "--set", "runtime.retry.attempts=3",
        "--set", "runtime.breaker.failures=5", "--set", "runtime.timeout=60s",
        "--metrics-port", "0"]
FULL_1S = [*FULL, "--set", "runtime.checkpoint_interval=1s"]


def default_interval() -> float:
    """The checkpoint interval of the headrace measured, when a pipeline sets none."""
    return float(RuntimeConfig.model_fields["checkpoint_interval"].default)


@dataclass
class Variant:
    name: str
    args: list[str]
    settings: str


def variants() -> dict[str, Variant]:
    policies = "retry 3 attempts, breaker 5 failures, timeout 60 s, --metrics-port 0"
    every = f"{default_interval():g} s"
    return {v.name: v for v in (
        Variant("bare", BARE, "checkpoint off, retry off (1 attempt), no breaker or timeout, "
                "no metrics"),
        Variant("full", FULL, f"checkpoint every {every} (the default), {policies}"),
        Variant("full-1s", FULL_1S, f"checkpoint every 1 s, {policies}"),
    )}


@dataclass
class Workload:
    label: str
    title: str
    pipeline: str
    suffix: str


CONVERT = Workload("convert", "CSV -> filter -> derive -> select -> Parquet (benchmark 1)",
                   "flights.yaml", ".parquet")
PASSTHROUGH = Workload("passthrough", "CSV -> python per-record step -> CSV (benchmark 3)",
                       "passthrough.yaml", ".csv")


def _run_dir(workload: Workload, variant: str) -> str:
    return f"headrace-run-{workload.label}-{variant}"


def _contenders(workload: Workload) -> list[Contender]:
    return [headrace(name, workload.pipeline, variant.args, run_dir=_run_dir(workload, name))
            for name, variant in variants().items()]


def run(src: Path, rows_src: Path, work: Path, repeats: int) -> list[Table]:
    tables: list[Table] = []
    rates: dict[str, dict[str, float]] = {}  # workload label -> variant -> throughput
    jobs: list[tuple[Workload, Path, Callable[..., Table]]] = [
        (CONVERT, src, _convert_table), (PASSTHROUGH, rows_src, _passthrough_table),
    ]
    for workload, path, make_table in jobs:
        print(f"\nbenchmark 4 ({workload.label}): {path.name}, {repeats} repeat(s)", flush=True)
        warm_cache(path)
        racers = _contenders(workload)
        results = run_round_robin(racers, [(workload.label, path)], work, repeats,
                                  workload.suffix)
        series = {r.name: results[(r.name, workload.label)].series for r in racers}
        outputs = {r.name: results[(r.name, workload.label)].output for r in racers}
        rates[workload.label] = {}
        table = make_table(workload, path, series=series, outputs=outputs, repeats=repeats,
                           rates=rates[workload.label])
        _notes(table, series)
        tables += [table, _steps_table(workload, work)]
    tables.append(_ratios(rates))
    return tables


def _ok(series: Series) -> Series:
    return Series([r for r in series.runs if r.ok])


def _status(series: Series, check: str) -> str:
    failed = len(series.runs) - len(_ok(series).runs)
    return check if not failed else f"{check}; {failed} of {len(series.runs)} runs FAILED"


def _failed_row(table: Table, name: str) -> None:
    table.add(name, "FAILED", *([""] * (len(table.headers) - 3)), "every run failed")


def _parquet_shape(path: Path) -> tuple[int, list[str], int] | None:
    if not path.is_file():
        return None
    meta = pq.ParquetFile(path)
    return meta.metadata.num_rows, meta.schema_arrow.names, meta.metadata.num_row_groups


def _convert_table(workload: Workload, src: Path, *, series: dict[str, Series],
                   outputs: dict[str, Path], repeats: int, rates: dict[str, float]) -> Table:
    size = src.stat().st_size
    table = Table(f"Benchmark 4 ({workload.label}): {workload.title}, {size / 1e6:,.0f} MB "
                  f"(median of {repeats})",
                  ["variant", "median s", "min-max s", "MB/s", "peak RSS MiB", "output rows",
                   "row groups", "check"])
    shapes = {name: _parquet_shape(path) for name, path in outputs.items()}
    counts = {s[0] for s in shapes.values() if s is not None}
    for name, every in series.items():
        ok = _ok(every)
        if not ok.runs:
            _failed_row(table, name)
            continue
        rates[name] = size / 1e6 / ok.seconds
        low, high = ok.spread
        shape = shapes[name]
        check = ("last run failed" if shape is None else
                 "ok" if len(counts) == 1 and shape[1] == COLUMNS else "MISMATCH")
        table.add(name, f"{ok.seconds:.2f}", f"{low:.2f}-{high:.2f}", f"{rates[name]:,.0f}",
                  mib(ok.peak_rss), f"{shape[0]:,}" if shape else "-",
                  str(shape[2]) if shape else "-", _status(every, check))
    table.notes.append(f"check: every output has the same row count and the columns "
                       f"{', '.join(COLUMNS)}; row groups of the last run's output (a "
                       "checkpoint closes a Parquet segment; at the end the segments are "
                       "copied into one file)")
    return table


def _passthrough_table(workload: Workload, src: Path, *, series: dict[str, Series],
                       outputs: dict[str, Path], repeats: int,
                       rates: dict[str, float]) -> Table:
    expected = row_count(src)
    table = Table(f"Benchmark 4 ({workload.label}): {workload.title}, {expected:,} records "
                  f"(median of {repeats})",
                  ["variant", "median s", "min-max s", "records/s", "peak RSS MiB",
                   "output rows", "check"])
    for name, every in series.items():
        ok = _ok(every)
        if not ok.runs:
            _failed_row(table, name)
            continue
        rates[name] = expected / ok.seconds
        low, high = ok.spread
        rows = count_rows(outputs[name])
        check = ("last run failed" if rows is None else "ok" if rows == expected
                 else "MISMATCH")
        table.add(name, f"{ok.seconds:.2f}", f"{low:.2f}-{high:.2f}", f"{rates[name]:,.0f}",
                  mib(ok.peak_rss), f"{rows:,}" if rows is not None else "-",
                  _status(every, check))
    table.notes.append(f"check: output rows equal the input's ({expected:,})")
    return table


def _notes(table: Table, series: dict[str, Series]) -> None:
    for name, variant in variants().items():
        table.notes.append(f"{name}: {variant.settings} (`{' '.join(variant.args)}`)")
    if any(len(_ok(s).runs) < len(s.runs) for s in series.values()):
        table.notes.append("medians are of the runs that succeeded")
    for name, every in series.items():
        failure = every.failure
        if failure is not None:
            lines = [line.strip() for line in failure.stderr.splitlines() if line.strip()]
            said = [line for line in lines if line.startswith("headrace:")]
            reason = (said or lines or [f"exit {failure.returncode}"])[0]
            table.notes.append(f"{name} failed (exit {failure.returncode}): {reason[:300]}")


def _summary(work: Path, workload: Workload, name: str) -> dict[str, Any] | None:
    path = work / _run_dir(workload, name) / "summary.json"
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary


def _steps_table(workload: Workload, work: Path) -> Table:
    """Where the time goes, from the run summaries (summary.json) of the last repeat."""
    table = Table(f"Benchmark 4 ({workload.label}): per-step latency in the last repeat's "
                  "run summary",
                  ["variant", "status", "engine s", "step", "batches", "p50 ms", "p95 ms",
                   "retries"])
    for name in variants():
        summary = _summary(work, workload, name)
        if summary is None:
            table.add(name, "no summary", "", "", "", "", "", "")
            continue
        for index, step in enumerate(summary.get("steps", [])):
            first = index == 0
            table.add(name if first else "", summary.get("status", "?") if first else "",
                      f"{summary.get('duration_s', 0):.2f}" if first else "",
                      step["id"], str(step.get("batches", "")), f"{step.get('p50_ms', 0):.1f}",
                      f"{step.get('p95_ms', 0):.1f}", str(step.get("retries", "")))
    table.notes.append("engine s: the run's own duration, without interpreter start-up and "
                       "imports; a step's latency runs from taking a batch to its result, so "
                       "with policies on it includes the wait for the step's call slot")
    return table


def _ratios(rates: dict[str, dict[str, float]]) -> Table:
    table = Table("Benchmark 4: throughput with the runtime on over off (goal >= 0.9x)",
                  ["workload", "full / bare", "status", "full-1s / bare", "status"])
    for workload in (CONVERT, PASSTHROUGH):
        measured = rates.get(workload.label, {})
        bare = measured.get("bare")
        cells: list[str] = []
        for name in ("full", "full-1s"):
            mine = measured.get(name)
            if bare is None or mine is None:
                cells += ["n/a", "every run failed"]
            else:
                cells += [ratio(mine / bare), goal(mine / bare, GOAL)]
        table.add(workload.label, *cells)
    table.notes.append(f"the goal (issue 3) is for full: >= {GOAL:.1f}x of bare; full-1s is "
                       "reported beside it (more checkpoints; a Parquet output is assembled "
                       "from its segments at the end)")
    return table
