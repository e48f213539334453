"""Backpressure end to end: with a slow step and sink, peak memory does not grow with the
input. A real subprocess on a 1x and a 5x input; peak RSS from the kernel (``wait4``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import HEADRACE

SLOW = """
import time
def slow(batch):
    time.sleep(0.002)
    return batch
"""


def _peak_rss_mib(write, tmp_path: Path, rows: int, name: str) -> float:  # type: ignore[no-untyped-def]
    data = tmp_path / f"{name}.csv"
    with data.open("w") as handle:
        handle.write("id,payload\n")
        for start in range(0, rows, 10_000):
            handle.write("".join(f"{i},{'p' * 80}{i}\n" for i in range(start, start + 10_000)))
    write("slowfn.py", SLOW)
    path = write(f"{name}.yaml", f"""
        version: 1
        name: {name}
        source: {{use: csv, path: {data.name}, block_size: 262144}}
        steps:
          - {{use: python, function: "slowfn:slow", mode: batch, format: arrow}}
        sink: {{use: jsonl, path: out/{name}.jsonl}}
        """)
    errors = tmp_path / f"{name}.stderr"
    with errors.open("wb") as stderr:
        proc = subprocess.Popen([*HEADRACE, "-q", "run", str(path)], stdout=subprocess.DEVNULL,
                                stderr=stderr, env={**os.environ, "NO_COLOR": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, errors.read_text()
    with (tmp_path / "out" / f"{name}.jsonl").open() as output:
        assert sum(1 for _ in output) == rows
    return usage.ru_maxrss / 1024  # KiB on Linux


def test_peak_memory_stays_flat_when_input_grows_5x(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert sys.platform.startswith("linux")
    small = _peak_rss_mib(write, tmp_path, 100_000, "small")   # ~10 MB of CSV
    large = _peak_rss_mib(write, tmp_path, 500_000, "large")   # ~50 MB
    # Buffering the input would add at least the 40 MB difference (more as Arrow/JSON).
    assert large - small < 20, f"peak RSS {small:.0f} MiB at 1x, {large:.0f} MiB at 5x"
