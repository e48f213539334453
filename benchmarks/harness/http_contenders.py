"""The clients of benchmark 5 and their inputs: a bare aiohttp loop (asyncio or uvloop),
a headrace pipeline with one ``http`` step, and a Scrapy spider (when installed).

Each contender fetches ``GET BASE/geo?zip=NNNNN`` for ``zip = id % 100000`` (five digits),
ids 0..N-1, with C requests in flight; each is a subprocess run by ``DemoServer.measure``.
The headrace pipeline and its JSONL input are written into the work folder, not the repo.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .contenders import SCRIPTS, headrace_executable

SCRAPY_MISSING = "scrapy: not installed (pip install -e '.[scrapy]')"
UVLOOP_MISSING = "uvloop: not installed (pip install -e '.[uvloop]')"


@dataclass(frozen=True)
class Job:
    """What one run asks for: the server, how many records, how many in flight."""

    base: str
    records: int
    concurrency: int
    params: Mapping[str, str] | None = None  # extra query parameters (headrace only)
    max_failures: str | None = None  # runtime.max_failures of the headrace pipeline


def bare_argv(job: Job, loop: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / "bare_aiohttp.py"), job.base, str(job.records),
            str(job.concurrency), "--loop", loop]


def scrapy_argv(job: Job) -> list[str]:
    return [sys.executable, str(SCRIPTS / "scrapy_spider.py"), job.base, str(job.records),
            str(job.concurrency)]


def _importable(module: str) -> bool:
    """``import module`` works in a fresh interpreter (this one's)."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          check=False)
    return done.returncode == 0


@cache
def scrapy_installed() -> bool:
    return _importable("scrapy")


@cache
def uvloop_installed() -> bool:
    return _importable("uvloop")


def client_report(stdout: str) -> dict[str, Any] | None:
    """The JSON line a bare or Scrapy client prints at the end."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict):
            return report
    return None


def first_error(stderr: str) -> str:
    """The line of a failed command's stderr that says what went wrong."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("headrace:") or "rror" in line]
    return ((said or lines or ["no error output"])[0])[:200]


def input_file(folder: Path, records: int) -> Path:
    """``zips-N.jsonl``: records ``{"id": i, "zip": "%05d" % (i % 100000)}``, made once."""
    path = folder / f"zips-{records}.jsonl"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for i in range(records):
                handle.write(f'{{"id": {i}, "zip": "{i % 100_000:05d}"}}\n')
    return path


def pipeline_text(job: Job, source: Path) -> str:
    """The headrace pipeline of one job (shown in benchmarks/README.md)."""
    params = {"zip": "{zip}", **(job.params or {})}
    runtime = {"run_dir": "run"}
    if job.max_failures is not None:
        runtime["max_failures"] = job.max_failures
    flow = ", ".join(f"{key}: {json.dumps(value)}" for key, value in params.items())
    settings = ", ".join(f"{key}: {json.dumps(value)}" for key, value in runtime.items())
    return "\n".join([
        "version: 1",
        "name: http-bench",
        f"source: {{use: jsonl, path: {json.dumps(str(source))}}}",
        "steps:",
        "  - id: geo",
        "    use: http",
        f"    url: {job.base}/geo",
        f"    params: {{{flow}}}",
        "    into: geo",
        f"    max_in_flight: {job.concurrency}",
        f"    per_host: {job.concurrency}",
        "sink: {use: jsonl, path: out.jsonl}",
        f"runtime: {{{settings}}}",
        "",
    ])


def write_pipeline(work: Path, label: str, job: Job) -> Path:
    """``work/http/<label>/pipeline.yaml`` for ``job``; its output and run dir beside it."""
    folder = work / "http" / label
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(pipeline_text(job, input_file(work / "http", job.records)),
                    encoding="utf-8")
    return path


def headrace_argv(pipeline: Path) -> list[str]:
    return [headrace_executable(), "-q", "run", str(pipeline)]


def headrace_unavailable(pipeline: Path) -> str | None:
    """None when ``headrace validate`` accepts the pipeline, else why not (one line)."""
    done = subprocess.run([headrace_executable(), "validate", str(pipeline)],
                          capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    return first_error(done.stderr or done.stdout)


def run_summary(pipeline: Path) -> dict[str, Any] | None:
    """``summary.json`` of the pipeline's last run, if any."""
    try:
        summary: dict[str, Any] = json.loads(
            (pipeline.parent / "run" / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary


def output_lines(pipeline: Path) -> int | None:
    """Lines in the pipeline's JSONL output, or None if it has none."""
    path = pipeline.parent / "out.jsonl"
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def clear_outputs(pipeline: Path) -> None:
    (pipeline.parent / "out.jsonl").unlink(missing_ok=True)
    (pipeline.parent / "run" / "summary.json").unlink(missing_ok=True)
