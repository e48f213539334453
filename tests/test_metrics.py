"""Prometheus metrics: the observer folds events into counters that equal the run summary, the
exposition parses, and ``headrace run --metrics-port`` serves /metrics and /healthz while the
run lasts and stops with it."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headrace.cli._metrics import BREAKER_STATES, MetricsObserver, MetricsServer
from headrace.config import load_pipeline
from headrace.engine import (
    BatchProcessed,
    BatchRead,
    BatchWritten,
    BreakerChanged,
    CheckpointCommitted,
    EdgeFill,
    Event,
    RateLimited,
    RetryScheduled,
    RunFinished,
    RunStarted,
    RunStats,
    Sampled,
    StepStats,
    StopRequested,
    build_plan,
    run_plan,
)
from headrace.errors import ConfigError

from .conftest import HEADRACE, assert_accounted

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition, keyed by name and sorted labels; it must parse."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def render(observer: MetricsObserver) -> Samples:
    return parse(generate_latest(observer.registry).decode())


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def realistic_events() -> tuple[list[Event], dict[str, Any]]:
    """Two steps, rejects, filters, dead letters, retries, a breaker cycle, rate limits,
    gauges and a checkpoint; the summary is built by the engine's own RunStats."""
    stats = RunStats(steps=[StepStats("parse"), StepStats("enrich")])
    events: list[Event] = [RunStarted("unit", ("parse", "enrich"), 10_000, "bytes")]
    for n, (rows, rejected) in enumerate([(100, 2), (100, 0), (37, 1)]):
        stats.records_in += rows + rejected
        stats.source_dead += rejected
        events.append(BatchRead(rows, rejected, 1000 * (n + 1)))
        records = rows
        for step, filtered, dead, seconds in ((stats.steps[0], 5, 1, 0.004),
                                              (stats.steps[1], 0, 2, 0.3)):
            out = records - filtered - dead
            step.records_in += records
            step.records_out += out
            step.filtered += filtered
            step.dead += dead
            step.latencies.add(seconds)
            events.append(BatchProcessed(step.id, records, out, filtered, dead, seconds))
            records = out
        stats.records_out += records
        events.append(BatchWritten(records))
    for reason in ("TimeoutError", "TimeoutError", "ConnectionResetError"):
        stats.steps[1].retries += 1
        events.append(RetryScheduled("enrich", 1, 0.5, reason))
    events += [
        BreakerChanged("enrich", "api.example.com", "open"),
        BreakerChanged("enrich", "api.example.com", "half_open"),
        BreakerChanged("enrich", "api.example.com", "closed"),
        BreakerChanged("enrich", "other.example.com", "open"),
        RateLimited("enrich", "api.example.com", 0.25),
        RateLimited("enrich", "other.example.com", 0.5),
        Sampled((EdgeFill("source->parse", 2, 2), EdgeFill("parse->enrich", 1, 2)),
                (("parse", 1), ("enrich", 4))),
        CheckpointCommitted(3000, 240),
    ]
    summary = stats.summary("ok", 1.0, pipeline="unit")
    events.append(RunFinished(summary))
    return events, summary


def test_counters_equal_the_run_summary() -> None:
    """A realistic event sequence renders a parsable exposition whose counters are the summary."""
    events, summary = realistic_events()
    observer = MetricsObserver("unit")
    for event in events:
        observer(event)
    samples = render(observer)

    assert observer.differences(summary) == []
    assert value(samples, "headrace_source_records_read_total") == summary["records_in"] == 240
    assert value(samples, "headrace_sink_records_written_total") == summary["records_out"]
    steps = ("parse", "enrich")
    filtered = sum(value(samples, "headrace_step_records_filtered_total", step=s) for s in steps)
    dead = value(samples, "headrace_source_records_rejected_total") + sum(
        value(samples, "headrace_step_records_dead_total", step=s) for s in steps)
    assert (filtered, dead) == (summary["records_filtered"], summary["records_dead"])
    for step in summary["steps"]:
        sid = step["id"]
        for key in ("in", "out", "filtered", "dead"):
            assert value(samples, f"headrace_step_records_{key}_total", step=sid) == step[key]
        retries = sum(v for (name, labels), v in samples.items()
                      if name == "headrace_step_retries_total" and ("step", sid) in labels)
        assert retries == step["retries"]
        count = value(samples, "headrace_step_batch_duration_seconds_count", step=sid)
        assert count == step["batches"] == 3
    assert value(samples, "headrace_step_retries_total", step="enrich",
                 reason="TimeoutError") == 2
    assert value(samples, "headrace_step_batch_duration_seconds_bucket", step="enrich",
                 le="0.25") == 0
    assert value(samples, "headrace_step_batch_duration_seconds_bucket", step="enrich",
                 le="0.5") == 3


def test_gauges_and_run_state_follow_the_events() -> None:
    """Breakers, rate-limit waits, channel fill, in-flight calls, checkpoint and run status."""
    events, _ = realistic_events()
    observer = MetricsObserver("unit")
    for event in events:
        observer(event)
    samples = render(observer)

    assert value(samples, "headrace_breaker_state", step="enrich", key="api.example.com") == 0
    assert value(samples, "headrace_breaker_state", step="enrich", key="other.example.com") == 2
    assert value(samples, "headrace_breaker_transitions_total", step="enrich",
                 key="api.example.com", state="open") == 1
    assert value(samples, "headrace_step_rate_limited_total", step="enrich") == 2
    assert value(samples, "headrace_step_rate_limit_wait_seconds_total", step="enrich") == 0.75
    assert value(samples, "headrace_edge_queued_batches", edge="source->parse") == 2
    assert value(samples, "headrace_edge_capacity_batches", edge="parse->enrich") == 2
    assert value(samples, "headrace_checkpoint_position") == 3000
    assert value(samples, "headrace_checkpoint_records") == 240
    assert value(samples, "headrace_run_info", pipeline="unit", version=_version()) == 1
    assert value(samples, "headrace_run_status", status="ok") == 1
    assert sum(v for (name, _), v in samples.items() if name == "headrace_run_status") == 1
    # The run is over: nothing is in flight any more.
    assert value(samples, "headrace_step_in_flight", step="enrich") == 0
    assert all(name.startswith("headrace_") for name, _ in samples)
    if sys.platform == "linux":
        assert value(samples, "headrace_process_resident_memory_bytes") > 0


def _version() -> str:
    from headrace import __version__

    return __version__


def test_in_flight_gauge_while_running() -> None:
    """A Sampled event sets in-flight calls per step; every step's series exists from the start."""
    observer = MetricsObserver("unit", process=False)
    observer(RunStarted("unit", ("a", "b"), None, "bytes"))
    assert ("headrace_step_records_in_total", (("step", "b"),)) in render(observer)
    observer(Sampled((), (("a", 3),)))
    samples = render(observer)
    assert value(samples, "headrace_step_in_flight", step="a") == 3
    assert value(samples, "headrace_run_status", status="running") == 1


@pytest.mark.parametrize(("state", "expected"), [("closed", 0), ("half_open", 1),
                                                 ("half-open", 1), ("open", 2)])
def test_breaker_state_encoding(state: str, expected: int) -> None:
    """headrace_breaker_state is 0 closed, 1 half_open, 2 open (docs/metrics.md)."""
    observer = MetricsObserver(process=False)
    observer(BreakerChanged("s", "k", state))
    assert value(render(observer), "headrace_breaker_state", step="s", key="k") == expected
    assert BREAKER_STATES[state.replace("-", "_")] == expected


def test_observer_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A malformed event is logged once and dropped; later events still count."""
    observer = MetricsObserver(process=False)
    with caplog.at_level(logging.WARNING, logger="headrace.cli.metrics"):
        observer(BatchRead(-5, 0, 0))  # a counter cannot go down
        observer(BatchRead(-5, 0, 0))
        observer(BatchRead(7, 0, 0))
    assert len(caplog.records) == 1
    assert value(render(observer), "headrace_source_records_read_total") == 7


def test_registry_is_per_observer() -> None:
    """Two observers do not share counters, and the global registry stays untouched."""
    first, second = MetricsObserver(process=False), MetricsObserver(process=False)
    first(BatchRead(5, 0, 0))
    assert value(render(second), "headrace_source_records_read_total") == 0
    assert REGISTRY.get_sample_value("headrace_source_records_read_total") is None


def test_server_serves_metrics_and_healthz_then_stops() -> None:
    """/metrics parses, /healthz answers JSON, other paths 404; close() frees the port."""
    observer = MetricsObserver("srv", process=False)
    observer(RunStarted("srv", ("a",), None, "bytes"))
    observer(BatchRead(3, 0, 0))
    server = MetricsServer(observer, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert server.url == f"{base}/metrics"
        status, text = get(f"{base}/metrics")
        assert status == 200
        assert value(parse(text), "headrace_source_records_read_total") == 3
        status, text = get(f"{base}/healthz")
        assert (status, json.loads(text)) == (200, {"status": "ok", "run": "running",
                                                    "pipeline": "srv"})
        assert get(f"{base}/nope")[0] == 404
        observer(StopRequested("SIGINT: draining"))
        assert json.loads(get(f"{base}/healthz")[1])["status"] == "stopping"
    finally:
        server.close()
    assert not server._thread.is_alive()
    server.close()  # idempotent
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


def test_port_in_use_is_a_config_error() -> None:
    """A port someone else listens on is a ConfigError (exit 2), not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen") as info:
            MetricsServer(MetricsObserver(process=False), "127.0.0.1", port)
    assert info.value.exit_code == 2


FAILING = """
def check(record):
    if record["id"] % 7 == 0:
        raise ValueError("multiple of seven")
    return record
"""


def test_a_real_run_agrees_with_its_summary(write) -> None:
    """The real engine, with rejects, filters and dead letters: counters == summary."""
    rows = "".join(f"{i},{i}\n" for i in range(2000)) + "oops,1\n" + "5,x,extra\n"
    write("in.csv", "id,v\n" + rows)
    write("metrics_check_fn.py", FAILING)
    path = write("p.yaml", """
        version: 1
        name: real
        source: {use: csv, path: in.csv, block_size: 4096, types: {id: int64}}
        steps:
          - {use: filter, where: "id % 5 <> 0"}
          - {use: python, function: "metrics_check_fn:check"}
        sink: {use: jsonl, path: out.jsonl}
        runtime: {max_failures: 1000, loop: asyncio}
        """)
    observer = MetricsObserver("real")
    result = run_plan(build_plan(load_pipeline(path)), [observer], handle_signals=False)
    summary = result.summary
    assert summary["status"] == "ok"
    assert_accounted(summary)
    assert summary["records_filtered"] > 0 and summary["records_dead"] > 2
    assert observer.differences(summary) == []
    totals = observer.totals()
    for key in ("records_in", "records_out", "records_filtered", "records_dead"):
        assert totals[key] == summary[key]
    assert value(render(observer), "headrace_source_records_rejected_total") == 2


GATED = """
import os, time
from pathlib import Path

RELEASE = Path(os.environ["HEADRACE_TEST_RELEASE"])

def slow(record):
    deadline = time.monotonic() + 30
    while not RELEASE.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.0003)
    if record["id"] % 97 == 0:
        raise ValueError("unlucky")
    return record
"""

MONOTONIC = ("headrace_source_records_read_total", "headrace_sink_records_written_total",
             "headrace_step_records_in_total", "headrace_step_records_out_total",
             "headrace_step_records_dead_total", "headrace_step_batch_duration_seconds_count")


class StderrLines:
    """Collects a subprocess's stderr lines on a thread, so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line.decode("utf-8", "replace"))

    def join(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


def wait_for(condition: Any, what: str, proc: subprocess.Popen[bytes],
              limit: float = 30) -> Any:
    deadline = time.monotonic() + limit
    while True:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"headrace ended before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def try_scrape(url: str) -> Samples | None:
    try:
        status, text = get(url)
    except OSError:  # refused: not up yet, or already stopped with the run
        return None
    assert status == 200
    return parse(text)


def test_cli_serves_metrics_while_running(write, tmp_path: Path) -> None:
    """--metrics-port 0: the URL is announced, scrapes parse and only grow, never pass the
    final summary; /healthz is ok; the endpoint is gone when the run ends."""
    write("in.csv", "id,v\n" + "".join(f"{i},{i}\n" for i in range(4000)))
    write("gatedfn.py", GATED)
    path = write("p.yaml", """
        version: 1
        name: scraped
        source: {use: csv, path: in.csv, block_size: 4096}
        steps:
          - {use: python, function: "gatedfn:slow"}
        sink: {use: jsonl, path: out.jsonl}
        runtime: {max_failures: 100}
        """)
    release = tmp_path / "release"
    env = {**os.environ, "NO_COLOR": "1", "HEADRACE_TEST_RELEASE": str(release)}
    proc = subprocess.Popen([*HEADRACE, "run", str(path), "--json", "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    stderr = StderrLines(proc)
    try:
        def announced() -> str | None:
            for line in stderr.lines:
                match = re.search(r"metrics on (http://\S+)/metrics", line)
                if match:
                    return match.group(1)
            return None

        base = wait_for(announced, "the metrics URL", proc)
        scrapes = [wait_for(lambda: try_scrape(f"{base}/metrics"), "a first scrape", proc)]
        status, health = get(f"{base}/healthz")
        assert status == 200 and json.loads(health)["status"] == "ok"
        assert get(f"{base}/other")[0] == 404
        # The step holds its first batch until released: the source has read, nothing is out.
        scrapes.append(wait_for(
            lambda: (s := try_scrape(f"{base}/metrics"))
            and value(s, "headrace_source_records_read_total") > 0 and s,
            "records read", proc))
        assert value(scrapes[-1], "headrace_run_status", status="running") == 1
        assert value(scrapes[-1], "headrace_sink_records_written_total") == 0
        release.write_text("go")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            scraped = try_scrape(f"{base}/metrics")
            if scraped is not None:
                scrapes.append(scraped)
            time.sleep(0.05)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        release.write_text("go")
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = stderr.join()
    assert proc.returncode == 0, text
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert_accounted(summary)
    assert summary["records_dead"] == len(range(0, 4000, 97))
    final = {"headrace_source_records_read_total": summary["records_in"],
             "headrace_sink_records_written_total": summary["records_out"]}
    assert len(scrapes) >= 2
    for earlier, later in pairwise(scrapes):
        for key, seen in earlier.items():
            if key[0] in MONOTONIC:
                assert later.get(key, 0) >= seen, key
    for scrape in scrapes:
        for name, limit in final.items():
            assert value(scrape, name) <= limit
        assert value(scrape, "headrace_step_records_dead_total", step="python") \
            <= summary["records_dead"]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(base.rsplit(":", 1)[1]))) != 0
    assert "Traceback" not in text


def test_cli_port_in_use_exits_2_before_running(write, tmp_path: Path) -> None:
    """A taken --metrics-port: one error line, exit 2, and the run never starts."""
    write("in.csv", "id\n1\n")
    path = write("p.yaml", """
        version: 1
        name: taken
        source: {use: csv, path: in.csv}
        sink: {use: jsonl, path: out.jsonl}
        """)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = subprocess.run([*HEADRACE, "run", str(path), "--metrics-port", port],
                              capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"headrace: error: --metrics-port: cannot listen on 127.0.0.1:{port}: Address already "
        "in use (hint: choose another --metrics-port, or 0 for any free port)"]
    assert not (tmp_path / "out.jsonl").exists()


def test_server_stops_when_the_run_fails(write) -> None:
    """A failing run (on_error: fail) still shuts the endpoint down and joins its thread."""
    write("in.csv", "id,v\n" + "".join(f"{i},{i}\n" for i in range(50)))
    write("metrics_fail_fn.py", FAILING)
    path = write("p.yaml", """
        version: 1
        name: failing
        source: {use: csv, path: in.csv}
        steps:
          - {use: python, function: "metrics_fail_fn:check", on_error: fail}
        sink: {use: jsonl, path: out.jsonl}
        """)
    code = ("import threading; from headrace.cli import main; "
            f"code = main(['-q', 'run', {str(path)!r}, '--metrics-port', '0']); "
            "print(code, [t.name for t in threading.enumerate() if 'metrics' in t.name])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=path.parent)
    assert out.stdout.strip() == "1 []", out.stderr
