"""The commands being compared, and running them round-robin so drift hits all alike."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .measure import Measurement, Series, run_measured

BENCH_DIR = Path(__file__).resolve().parent.parent
PIPELINES = BENCH_DIR / "pipelines"
SCRIPTS = BENCH_DIR / "contenders"


def headrace_executable() -> str:
    """The ``headrace`` script next to this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / "headrace"
    if local.is_file():
        return str(local)
    found = shutil.which("headrace")
    if found is None:
        raise SystemExit("cannot find the headrace executable; run with the venv's python")
    return found


@dataclass
class Contender:
    """One way of doing a workload: its argv and extra environment for (input, output)."""

    name: str
    argv: Callable[[Path, Path], list[str]]
    env: Callable[[Path, Path, Path], dict[str, str]] = field(default=lambda i, o, w: {})


def headrace(name: str, pipeline: str, args: Sequence[str] = (),
             run_dir: str = "headrace-run") -> Contender:
    """``headrace -q run pipelines/<pipeline> [args]``, its run directory ``work/<run_dir>``."""
    exe = headrace_executable()
    return Contender(
        name=name,
        argv=lambda src, dst: [exe, "-q", "run", str(PIPELINES / pipeline), *args],
        env=lambda src, dst, work: {"BENCH_INPUT": str(src), "BENCH_OUTPUT": str(dst),
                                    "BENCH_RUN_DIR": str(work / run_dir)},
    )


def script(name: str, filename: str) -> Contender:
    return Contender(
        name=name,
        argv=lambda src, dst: [sys.executable, str(SCRIPTS / filename), str(src), str(dst)],
    )


@dataclass
class Outcome:
    series: Series
    output: Path  # the last run's output, still on disk


def run_round_robin(
    contenders: Sequence[Contender],
    jobs: Sequence[tuple[str, Path]],
    work: Path,
    repeats: int,
    suffix: str,
) -> dict[tuple[str, str], Outcome]:
    """Run every (contender, job) ``repeats`` times, interleaved; keyed by (name, job label).

    ``jobs`` are (label, input file) pairs; outputs are named ``<name>-<label><suffix>``.
    """
    results: dict[tuple[str, str], Outcome] = {}
    for rep in range(repeats):
        for label, src in jobs:
            for contender in contenders:
                key = (contender.name, label)
                dst = work / f"{contender.name}-{label}{suffix}"
                dst.unlink(missing_ok=True)
                run = run_measured(contender.argv(src, dst), contender.env(src, dst, work))
                outcome = results.setdefault(key, Outcome(Series(), dst))
                outcome.series.runs.append(run)
                _progress(rep, repeats, contender.name, label, run)
    return results


def _progress(rep: int, repeats: int, name: str, label: str, run: Measurement) -> None:
    status = "ok" if run.ok else f"FAILED (exit {run.returncode})"
    print(f"  [{rep + 1}/{repeats}] {name:<12} {label:<6} {run.seconds:7.2f} s "
          f"{run.peak_rss / 1024**2:7.0f} MiB  {status}", flush=True)
    if not run.ok:
        tail = "\n".join(run.stderr.strip().splitlines()[-5:])
        print("      " + tail.replace("\n", "\n      "), flush=True)
