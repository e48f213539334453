"""Run one command as a child process and measure its wall time and peak memory.

The command runs under ``spawn_wrapper.py``, a fresh small process, which times it and
reports its ``ru_maxrss`` (the kernel's high-water mark; covers waited-for descendants one
at a time). Meanwhile psutil samples the summed RSS of the command's process tree, which
catches worker processes alive at the same time. Peak RSS is the larger of the two.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_INTERVAL = 0.05
WRAPPER = Path(__file__).resolve().parent / "spawn_wrapper.py"


@dataclass
class Measurement:
    seconds: float
    peak_rss: int  # bytes
    returncode: int
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Series:
    """Repeated measurements of one contender."""

    runs: list[Measurement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    @property
    def failure(self) -> Measurement | None:
        return next((r for r in self.runs if not r.ok), None)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def spread(self) -> tuple[float, float]:
        times = [r.seconds for r in self.runs]
        return min(times), max(times)

    @property
    def peak_rss(self) -> int:
        return int(statistics.median(r.peak_rss for r in self.runs))


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            wrapper = psutil.Process(self.pid)
            while not self._done.is_set():
                procs = wrapper.children(recursive=True)  # the command's tree, not the wrapper
                total = 0
                for proc in procs:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += proc.memory_info().rss
                self.peak = max(self.peak, total)
                self._done.wait(SAMPLE_INTERVAL)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None = None,
                 timeout: float = 3600.0) -> Measurement:
    """Run ``cmd`` (stdout discarded, stderr kept) and measure it."""
    full_env = {**os.environ, **(env or {})}
    fd, result_name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    result_path = Path(result_name)
    try:
        with tempfile.TemporaryFile() as err:
            wrapper = subprocess.Popen(
                [sys.executable, "-S", str(WRAPPER), result_name, *cmd],
                stdout=subprocess.DEVNULL, stderr=err, env=full_env, start_new_session=True,
            )
            sampler = _TreeSampler(wrapper.pid)
            sampler.start()
            try:
                wrapper.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(wrapper.pid, signal.SIGKILL)
                wrapper.wait()
            sampler.stop()
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        text = result_path.read_text(encoding="utf-8")
    finally:
        result_path.unlink(missing_ok=True)
    if wrapper.returncode != 0 or not text:
        return Measurement(0.0, sampler.peak, wrapper.returncode or -1, stderr)
    result = json.loads(text)
    peak = max(result["maxrss_kib"] * 1024, sampler.peak)  # ru_maxrss is in KiB on Linux
    return Measurement(result["seconds"], peak, result["returncode"], stderr)
