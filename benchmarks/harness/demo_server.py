"""``headrace demo-api`` in its own process, and a client's throughput as the server saw it.

Every HTTP contender is measured the same way, from the server's side, so interpreter
start-up and imports (0.3 s for a bare script, ~1 s for headrace or Scrapy) do not count:

- with the server's request log (``GET /stats/requests``, when the server has it): the
  requests of the run divided by the time between the first and the last request's start;
- otherwise from ``GET /stats``, polled every ``POLL_INTERVAL`` s during the run: the growth
  of the request count between the first poll that saw a request and the last poll before
  the count stopped growing, over the time between those two polls.

CPU use of the server and of the client in that same window comes from psutil, sampled at
each poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

POLL_INTERVAL = 0.2  # seconds between two GET /stats during a run
_CHECK_INTERVAL = 0.02  # seconds between two checks whether the client has exited
_LISTENING = re.compile(r"listening on (http://\S+)")
# urllib without any proxy from the environment: the server is on the loopback interface
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a client started in its own session, and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class ServerError(RuntimeError):
    """The demo API did not start, or stopped answering."""


def _cpu_seconds(proc: psutil.Process | None) -> float | None:
    if proc is None:
        return None
    try:
        times = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


@dataclass
class Sample:
    """One poll: when (monotonic, mid-request), the server's request count, CPU seconds."""

    t: float
    requests: int
    server_cpu: float | None
    client_cpu: float | None


@dataclass
class Trial:
    """One client run against the server."""

    returncode: int
    wall_s: float  # the client process, start-up included
    cpu_s: float  # the client process (user + system), start-up included
    stdout: str
    stderr: str
    stats: dict[str, Any]  # GET /stats after the run
    samples: list[Sample] = field(default_factory=list)
    log: list[dict[str, Any]] | None = None  # this run's entries of GET /stats/requests

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def requests(self) -> int:
        return int(self.stats.get("requests", 0))

    def status_count(self, status: int) -> int:
        return int(self.stats.get("by_status", {}).get(str(status), 0))

    def _window(self) -> tuple[Sample, Sample] | None:
        """The first poll that saw a request and the last one before the count stopped."""
        final = self.requests
        started = [s for s in self.samples if s.requests > 0]
        growing = [s for s in self.samples if s.requests < final]
        if not started or not growing or growing[-1].t <= started[0].t:
            return None
        return started[0], growing[-1]

    @property
    def method(self) -> str:
        if self.log is not None and len(self.log) >= 2:
            return "log"
        return "poll" if self._window() is not None else "none"

    @property
    def rate(self) -> float | None:
        """Requests per second as the server saw them, or None if the run was too short."""
        if self.log is not None and len(self.log) >= 2:
            starts = sorted(float(entry["t"]) for entry in self.log)
            span = starts[-1] - starts[0]
            return (len(starts) - 1) / span if span > 0 else None
        window = self._window()
        if window is None:
            return None
        first, last = window
        return (last.requests - first.requests) / (last.t - first.t)

    def _durations(self) -> list[float]:
        return [float(e["end"]) - float(e["t"]) for e in self.log or []
                if e.get("end") is not None]

    @property
    def server_seconds(self) -> float | None:
        """Median time from a request's arrival to its answer (request log only)."""
        durations = self._durations()
        return statistics.median(durations) if durations else None

    @property
    def in_flight(self) -> float | None:
        """Requests in flight at the server on average (request log only): the time spent
        on requests over the span from the first arrival to the last answer."""
        durations = self._durations()
        if not durations or not self.log:
            return None
        ends = [float(e["end"]) for e in self.log if e.get("end") is not None]
        span = max(ends) - float(self.log[0]["t"])
        return sum(durations) / span if span > 0 else None

    def _cpu_share(self, attr: str) -> float | None:
        window = self._window()
        if window is None:
            return None
        first, last = window
        before, after = getattr(first, attr), getattr(last, attr)
        if before is None or after is None:
            return None
        return float(after - before) / (last.t - first.t)

    @property
    def server_cpu(self) -> float | None:
        """The server's CPU use in the polling window, 1.0 = one core busy."""
        return self._cpu_share("server_cpu")

    @property
    def client_cpu(self) -> float | None:
        """The client's CPU use in the polling window, 1.0 = one core busy."""
        return self._cpu_share("client_cpu")

    @property
    def client_cpu_per_request(self) -> float | None:
        """Client CPU seconds per request in the polling window (start-up excluded)."""
        window = self._window()
        if window is None:
            return None
        first, last = window
        if first.client_cpu is None or last.client_cpu is None:
            return None
        return (last.client_cpu - first.client_cpu) / max(1, last.requests - first.requests)


class DemoServer:
    """``headrace demo-api --port 0 ARGS`` while the ``with`` lasts; stopped with SIGTERM."""

    def __init__(self, executable: str, args: Sequence[str] = (), work: Path | None = None):
        self.argv = [executable, "demo-api", "--port", "0", *args]
        self.work = work
        self.url = ""
        self.has_log = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None
        self._err_path: Path | None = None

    def __enter__(self) -> DemoServer:
        fd, name = tempfile.mkstemp(prefix="demo-api-", suffix=".err", dir=self.work)
        self._err_path = Path(name)
        with os.fdopen(fd, "wb") as err:  # a file, not a pipe: a full pipe would block it
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=err)
        try:
            self.url = self._wait_until_listening(timeout=30.0)
            self._ps = psutil.Process(self._proc.pid)
            self.has_log = self._probe_log()
            self.reset()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_until_listening(self, timeout: float) -> str:
        assert self._proc is not None and self._err_path is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._err_path.read_text(encoding="utf-8", errors="replace")
            match = _LISTENING.search(text)
            if match:
                return match.group(1)
            if self._proc.poll() is not None:
                raise ServerError(f"demo-api exited ({self._proc.returncode}): "
                                  f"{text.strip()[-300:]}")
            time.sleep(0.05)
        raise ServerError(f"demo-api did not start within {timeout:.0f} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._err_path is not None:
            self._err_path.unlink(missing_ok=True)
            self._err_path = None

    def get(self, path: str, timeout: float = 10.0) -> Any:
        with _OPENER.open(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        request = urllib.request.Request(self.url + "/stats/reset", data=b"", method="POST")
        with _OPENER.open(request, timeout=10.0) as response:
            response.read()

    def _probe_log(self) -> bool:
        """Whether this server keeps a request log (``GET /stats/requests``)."""
        try:
            body = self.get("/stats/requests")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return isinstance(body, dict) and isinstance(body.get("requests"), list)

    def _sample(self, client: psutil.Process | None) -> Sample:
        before = time.monotonic()
        count = int(self.get("/stats")["requests"])
        after = time.monotonic()
        return Sample((before + after) / 2, count, _cpu_seconds(self._ps), _cpu_seconds(client))

    def _request_log(self, path: str, expected: int) -> list[dict[str, Any]] | None:
        """This run's entries of the request log for ``path``, by arrival (the log is read
        after a reset; had the reset not cleared it, the last ``expected`` are this run's)."""
        if not self.has_log:
            return None
        try:
            entries = self.get(f"/stats/requests?path={path}", timeout=60.0)["requests"]
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return None
        mine = [e for e in entries if e.get("path") == path and e.get("t") is not None]
        if len(mine) < expected:
            return None  # a capped log: fall back to the polls
        return sorted(mine, key=lambda e: float(e["t"]))[len(mine) - expected:]

    def measure(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                cwd: Path | None = None, timeout: float = 600.0,
                path: str = "/geo") -> Trial:
        """Run a client command to completion, polling the server meanwhile."""
        self.reset()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, env={**os.environ, **(env or {})}, cwd=cwd,
                                    start_new_session=True)
            client: psutil.Process | None
            try:
                client = psutil.Process(proc.pid)
            except psutil.NoSuchProcess:
                client = None
            try:
                samples = self._poll_until_exit(proc, client, start + timeout)
            finally:  # interrupted (Ctrl-C, a failed poll): do not leave the client running
                if proc.poll() is None:
                    _kill_group(proc)
            wall = time.perf_counter() - start
            usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        stats = self.get("/stats")
        samples.append(Sample(time.monotonic(), int(stats["requests"]), None, None))
        cpu = ((usage_after.ru_utime - usage_before.ru_utime)
               + (usage_after.ru_stime - usage_before.ru_stime))
        trial = Trial(proc.returncode, wall, cpu, stdout, stderr, stats, samples)
        trial.log = self._request_log(path, trial.requests)
        return trial

    def _poll_until_exit(self, proc: subprocess.Popen[bytes], client: psutil.Process | None,
                         deadline: float) -> list[Sample]:
        samples: list[Sample] = []
        next_poll = time.monotonic()
        while proc.poll() is None:
            if time.perf_counter() > deadline:
                _kill_group(proc)
                break
            if time.monotonic() >= next_poll:
                samples.append(self._sample(client))
                next_poll = max(next_poll + POLL_INTERVAL, time.monotonic())
            time.sleep(_CHECK_INTERVAL)
        return samples
