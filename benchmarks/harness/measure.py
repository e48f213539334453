"""Run one command as a child process and measure its wall time and peak memory.

Peak RSS is the larger of two lower bounds of the true peak:
- the kernel's high-water mark of the child (``ru_maxrss`` from ``os.wait4`` of that child,
  which also covers its waited-for descendants, one at a time);
- the sum of RSS over the child's whole process tree, sampled with psutil while it runs
  (catches worker processes that live at the same time).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psutil

SAMPLE_INTERVAL = 0.05


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
            root = psutil.Process(self.pid)
            while not self._done.is_set():
                procs = [root, *root.children(recursive=True)]
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
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=err, env=full_env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        killer.cancel()
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    peak = max(usage.ru_maxrss * 1024, sampler.peak)  # ru_maxrss is in KiB on Linux
    return Measurement(seconds, peak, proc.returncode, stderr)
