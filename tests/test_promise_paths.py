"""Regression tests for the paths where the promise broke: every record ends exactly once
(sink, filtered or dead letter), ``records_in == out + filtered + dead``, and a run stopped
or killed at any moment resumes (``--resume``) to the output an uninterrupted run gives.

Each test runs real ``headrace`` subprocesses (one, the memory budget's, runs the engine
in-process to read its counter) on small inputs. Signals are sent once the run shows
progress (a progress file written by a slow python step, the ledger, the dead-letter file),
never after a fixed wait; ``wait(timeout=...)`` only detects hangs. The slow functions and
the test plugins live in ``tests/promise_support.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HEADRACE, assert_accounted, read_jsonl, run_cli
from tests.promise_support import progress_of

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "tests.promise_support"


def _env(**extra: str) -> dict[str, str]:
    """The tests' modules on the Python path, plus ``PROMISE_*`` settings."""
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {"PYTHONPATH": path, **extra}


class Run:
    """A ``headrace run`` in the background, its output in files (no pipe can fill up)."""

    def __init__(self, folder: Path, pipeline: Path, *args: str, env: dict[str, str],
                 stdin: int | None = subprocess.DEVNULL) -> None:
        self.out_path = folder / f"stdout.{time.monotonic_ns()}"
        self.err_path = self.out_path.with_name(self.out_path.name.replace("stdout", "stderr"))
        full_env = {**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull, **env}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            # A session of its own: the test can clean up the worker processes it leaves.
            self.proc = subprocess.Popen([*HEADRACE, "run", str(pipeline), "--json", *args],
                                         env=full_env, stdout=out, stderr=err, stdin=stdin,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; fails the test (and kills the run) if it does not end in time."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"the run did not end within {timeout} s (a hang): {self.stderr}")

    def kill_all(self) -> None:
        """SIGKILL the run and every process of its session (pool workers included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    @property
    def summary(self) -> dict[str, Any]:
        lines = self.out_path.read_text(encoding="utf-8").strip().splitlines()
        assert lines, f"no summary on stdout; stderr: {self.stderr}"
        return json.loads(lines[-1])


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Background runs a test started: none outlives it."""
    started: list[Run] = []
    yield started
    for run in started:
        if run.alive():
            run.kill_all()


def wait_until(condition: Callable[[], bool], run: Run, what: str, timeout: float = 60) -> None:
    """Poll ``condition`` while ``run`` is still going; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.alive(), f"the run ended before {what}: {run.stderr}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)


def ledger(folder: Path, name: str) -> tuple[str | None, dict[str, Any] | None]:
    """The ledger's status and last checkpoint (None, None before there is one)."""
    path = folder / ".headrace" / "runs" / name / "ledger.sqlite"
    if not path.exists():
        return None, None
    db = sqlite3.connect(path, timeout=10)
    try:
        row = db.execute("SELECT status, checkpoint FROM run").fetchone()
    except sqlite3.OperationalError:  # the table is not made yet
        return None, None
    finally:
        db.close()
    if row is None:
        return None, None
    return row[0], json.loads(row[1]) if row[1] else None


def checkpointed_records(folder: Path, name: str) -> int:
    checkpoint = ledger(folder, name)[1]
    return int(checkpoint["records"]) if checkpoint else 0


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- 1. a stop with an aggregate --------------------------------------------------------------

AGGREGATE = f"""
version: 1
name: agg
source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
steps:
  - {{use: python, function: "{SUPPORT}:slow", mode: batch, format: arrow}}
  - use: aggregate
    group_by: [g]
    metrics: {{n: "count(*)", s: "sum(v)"}}
sink: {{use: jsonl, path: out/o.jsonl}}
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_aggregate_stopped_by_a_signal_resumes_to_the_uninterrupted_output(
        write, tmp_path: Path, runs: list[Run], sig: signal.Signals, code: int) -> None:
    """A signal during a run with an aggregate exits 130/143 and ``--resume`` gives the
    uninterrupted run's groups, not groups built from part of the input twice."""
    rows = [{"id": i, "g": f"k{i % 5}", "v": i, "pad": "x" * 30} for i in range(2000)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    pipeline = write("p.yaml", AGGREGATE)
    progress = tmp_path / "progress"
    run = Run(tmp_path, pipeline, env=_env(PROMISE_SLEEP="0.05", PROMISE_PROGRESS=str(progress)))
    runs.append(run)
    wait_until(lambda: progress_of(progress) >= 300, run, "300 records through the slow step")
    run.signal(sig)
    assert run.wait(60) == code, run.stderr
    summary = run.summary
    assert summary["status"] == "interrupted"
    assert progress_of(progress) < len(rows), "the signal came after the input ended"
    assert not (tmp_path / "out" / "o.jsonl").exists()  # it waits for --resume
    # What the aggregate held is neither out nor filtered: counted as unfinished.
    assert summary["records_unfinished"] > 0
    assert summary["records_in"] == (summary["records_out"] + summary["records_filtered"]
                                     + summary["records_dead"] + summary["records_unfinished"])

    resumed = run_cli("run", str(pipeline), "--resume", "--json",
                      env=_env(PROMISE_SLEEP="0"), timeout=120)
    assert resumed.code == 0, resumed.stderr
    expected = [{"g": f"k{k}", "n": 400, "s": sum(range(k, 2000, 5))} for k in range(5)]
    assert read_jsonl(tmp_path / "out" / "o.jsonl") == expected


# -- 2. on_error: skip on a regrouping step ---------------------------------------------------

def test_skip_on_a_regrouping_step_counts_skipped_records_as_filtered(write, tmp_path: Path
                                                                      ) -> None:
    """``on_error: skip`` on an aggregate turns its failed records into filtered ones: no
    dead letters are counted, none is written, and the run exits 0 at ``max_failures: 0``."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "g": i % 5, "v": i} for i in range(2000)])
    pipeline = write("p.yaml", f"""
        version: 1
        name: skip
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - {{use: python, function: "{SUPPORT}:drop_group_column", mode: batch,
              format: arrow}}
          - use: aggregate
            id: agg
            group_by: [g]
            metrics: {{n: "count(*)"}}
            on_error: skip
        sink: {{use: jsonl, path: out/o.jsonl}}
        """)
    result = run_cli("run", str(pipeline), "--json", env=_env())
    summary = result.summary
    assert summary["records_dead"] == 0, summary
    assert result.code == 0, result.stderr
    assert_accounted(summary)
    agg = next(s for s in summary["steps"] if s["id"] == "agg")
    assert agg["dead"] == 0 and agg["filtered"] == 2000 - agg["out"], agg
    assert not (tmp_path / "out" / "o.dead.jsonl").exists()
    assert sum(r["n"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")) < 2000


# -- 3. a regrouping step's call out of retries ---------------------------------------------

def test_retries_exhausted_in_a_regrouping_step_do_not_release_what_it_holds(
        write, tmp_path: Path, runs: list[Run]) -> None:
    """When a regrouping step's call runs out of retries, only that call's records are dead
    letters; what the step still holds is not checkpointed as written, so SIGKILL and
    ``--resume`` end with every id exactly once in the output or the dead letters."""
    count = 3000
    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "v": i, "pad": "x" * 40} for i in range(count)])
    failed_ids = tmp_path / "failed_ids"
    pipeline = write("p.yaml", f"""
        version: 1
        name: hold
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - {{use: python, function: "{SUPPORT}:slow", mode: batch, format: arrow}}
          - use: {SUPPORT}:HoldAll
            id: hold
            fail_id: 400
            ids_file: {failed_ids}
            retry: {{attempts: 2, base: 0.01}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{checkpoint_interval: 1ms, max_failures: 10%}}
        """)
    progress = tmp_path / "progress"
    run = Run(tmp_path, pipeline, env=_env(PROMISE_SLEEP="0.05", PROMISE_PROGRESS=str(progress)))
    runs.append(run)
    wait_until(failed_ids.exists, run, "the failing call")
    # Well after the failure: its checkpoint (if any) is committed, the run is not over.
    wait_until(lambda: progress_of(progress) >= 1500, run, "1500 records through")
    run.signal(signal.SIGKILL)
    run.wait(30)

    resumed = run_cli("run", str(pipeline), "--resume", "--json",
                      env=_env(PROMISE_SLEEP="0"), timeout=120)
    assert resumed.code == 0, resumed.stderr
    out = [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")]
    dead = [d["record"]["id"] for d in read_jsonl(tmp_path / "out" / "o.dead.jsonl")]
    seen = Counter(out + dead)
    lost = sorted(set(range(count)) - set(seen))
    assert not lost, f"{len(lost)} ids in neither the output nor the dead letters"
    assert not [i for i, n in seen.items() if n > 1], "ids written twice"
    batch_ids = [int(line) for line in failed_ids.read_text().split()]
    assert 400 in batch_ids
    assert sorted(dead) == sorted(batch_ids)  # exactly the records of the failed call


# -- 4. timeout on a stateful step ------------------------------------------------------------

@pytest.mark.parametrize("where", ["step", "runtime"])
def test_timeout_on_a_stateful_step_is_refused_or_keeps_its_state(write, tmp_path: Path,
                                                                  where: str) -> None:
    """A ``timeout`` on ``dedupe`` (its own, or ``runtime.timeout``) is either refused up front
    (exit 2, one line naming the timeout) or cooperative: no unique record is dropped as a
    duplicate and every id ends exactly once in the output or the dead letters."""
    count = 20_000
    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "pad": "x" * 20} for i in range(count)])
    step_timeout = ", timeout: 0.02" if where == "step" else ""
    runtime_timeout = ", timeout: 0.02" if where == "runtime" else ""
    pipeline = write("p.yaml", f"""
        version: 1
        name: dd
        source: {{use: jsonl, path: in.jsonl, block_size: 65536}}
        steps:
          - {{use: dedupe, id: uniq, key: [id]{step_timeout}}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{max_failures: 100%{runtime_timeout}}}
        """)
    result = run_cli("run", str(pipeline), "--json", timeout=120)
    assert "Segmentation fault" not in result.stderr and result.code >= 0, result.stderr
    if result.code == 2:  # refused: before anything was read
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert "timeout" in lines[0].lower(), result.stderr
        assert "uniq" in result.stderr or "dedupe" in result.stderr, result.stderr
        assert not (tmp_path / "out" / "o.jsonl").exists()
        return
    assert result.code == 0, result.stderr
    summary = result.summary
    assert summary["records_filtered"] == 0, f"unique records dropped as duplicates: {summary}"
    assert_accounted(summary)
    out = [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")]
    dead_path = tmp_path / "out" / "o.dead.jsonl"
    dead = [d["record"]["id"] for d in read_jsonl(dead_path)] if dead_path.exists() else []
    assert sorted(out + dead) == list(range(count))


# -- 5. an SQLite sink whose table did not exist at the checkpoint ----------------------------

@pytest.mark.parametrize("source", ["jsonl", "csv"])
def test_sqlite_sink_resumes_from_a_checkpoint_taken_before_its_table_existed(
        write, tmp_path: Path, runs: list[Run], source: str) -> None:
    """SIGKILL after a checkpoint that came before the SQLite table was created (the first
    block was all bad lines): ``--resume`` completes the table, every line once."""
    bad, good = range(900), range(900, 2900)
    if source == "jsonl":  # bad JSON: the first batch has no columns, so no table is made
        text = "".join("{bad\n" for _ in bad) + "".join(
            json.dumps({"id": i, "v": i}) + "\n" for i in good)
        spec = "{use: jsonl, path: in.jsonl, block_size: 4096}"
        first_line = 1
    else:  # values not of the declared type
        text = "id,v\n" + "".join(f"{i},abc\n" for i in bad) + "".join(
            f"{i},{i}\n" for i in good)
        spec = "{use: csv, path: in.csv, block_size: 4096, types: {id: int64, v: int64}}"
        first_line = 2
    (tmp_path / f"in.{source}").write_text(text, encoding="utf-8")
    pipeline = write("p.yaml", f"""
        version: 1
        name: lite
        source: {spec}
        steps:
          - {{use: python, function: "{SUPPORT}:slow", mode: batch, format: arrow}}
        sink: {{use: sqlite, path: out/o.db, table: t}}
        runtime: {{checkpoint_interval: 1ms, max_failures: 1000}}
        """)
    # The first batch with records sleeps long: the kill lands between the first
    # checkpoint (the all-bad block) and the next one.
    run = Run(tmp_path, pipeline, env=_env(PROMISE_SLEEP="3"))
    runs.append(run)
    wait_until(lambda: checkpointed_records(tmp_path, "lite") > 0, run, "the first checkpoint")
    run.signal(signal.SIGKILL)
    run.wait(30)
    assert checkpointed_records(tmp_path, "lite") < 4096 // 4  # only the all-bad block

    resumed = run_cli("run", str(pipeline), "--resume", "--json",
                      env=_env(PROMISE_SLEEP="0"), timeout=120)
    assert resumed.code == 0, resumed.stderr
    db = sqlite3.connect(tmp_path / "out" / "o.db")
    try:
        ids = [row[0] for row in db.execute("SELECT id FROM t ORDER BY rowid")]
    finally:
        db.close()
    assert ids == list(good)
    dead = read_jsonl(tmp_path / "out" / "o.dead.jsonl")
    assert sorted(d["position"]["line"] for d in dead) == [i + first_line for i in bad]


# -- 6. a refused --resume leaves the ledger as it was ----------------------------------------

DIE_AT = """
import importlib, os, signal, sys

module, name = sys.argv[1:3]
target = importlib.import_module(module)
real = getattr(target, name)

def die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(target, name, die)
from headrace.cli import main

sys.argv = ["headrace", *sys.argv[3:]]
main()
"""


def _output_of(folder: Path, sink: str) -> list[Any]:
    if sink == "sqlite":
        db = sqlite3.connect(folder / "out" / "o.db")
        try:
            return list(db.execute("SELECT rowid, * FROM t ORDER BY rowid"))
        finally:
            db.close()
    return [(p.name, p.read_bytes()) for p in sorted((folder / "out").iterdir())]


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
@pytest.mark.parametrize("ending", ["completed", "stopped"])
def test_a_refused_resume_is_refused_again(write, tmp_path: Path, sink: str,
                                           ending: str) -> None:
    """``--resume`` of a completed run, or one stopped at ``max_failures``, exits 2 every
    time: a refusal does not rewrite the ledger, and the output stays untouched."""
    lines = ["id,v"] + [f"{i},{i}" + (",ragged" if ending == "stopped" and i % 50 == 0
                                      else "") for i in range(500)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sinks = {"jsonl": "{use: jsonl, path: out/o.jsonl}",
             "sqlite": "{use: sqlite, path: out/o.db, table: t}"}
    pipeline = write("p.yaml", f"""
        version: 1
        name: refuse
        source: {{use: csv, path: in.csv}}
        sink: {sinks[sink]}
        runtime: {{max_failures: 3}}
        """)
    first = run_cli("run", str(pipeline), "--json")
    assert first.code == (0 if ending == "completed" else 1), first.stderr
    assert ledger(tmp_path, "refuse")[0] == ending
    before = _output_of(tmp_path, sink)
    for attempt in range(3):
        again = run_cli("run", str(pipeline), "--resume", "--json")
        assert again.code == 2, f"--resume #{attempt + 1}: exit {again.code}: {again.stderr}"
        assert "nothing to resume" in again.stderr
    assert _output_of(tmp_path, sink) == before
    assert ledger(tmp_path, "refuse")[0] == ending


def test_a_refused_resume_of_a_publishing_run_leaves_it_to_finish(write, tmp_path: Path
                                                                   ) -> None:
    """A run killed while publishing, whose first ``--resume`` is refused (the input's time
    changed), is still finished by a later ``--resume`` once the input is back."""
    lines = ["id,v"] + [f"{i},{i}" for i in range(500)]
    source = tmp_path / "in.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pipeline = write("p.yaml", """
        version: 1
        name: pub
        source: {use: csv, path: in.csv}
        sink: {use: jsonl, path: out/o.jsonl}
        """)
    killed = subprocess.run(
        [sys.executable, "-c", DIE_AT, "headrace.builtins._file_sink", "publish",
         "run", str(pipeline)], capture_output=True, timeout=60, check=False,
        env={**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull})
    assert killed.returncode == -9, killed.stderr.decode()
    assert ledger(tmp_path, "pub")[0] == "publishing"

    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    refused = run_cli("run", str(pipeline), "--resume", "--json")
    assert refused.code == 2 and "input changed" in refused.stderr, refused.stderr
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    resumed = run_cli("run", str(pipeline), "--resume", "--json")
    assert resumed.code == 0, f"--resume after the refusal: {resumed.stderr}"
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")] == list(range(500))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["o.jsonl"]
    finished = run_cli("run", str(pipeline), "--resume", "--json")
    assert finished.code == 2 and "the last run completed" in finished.stderr


# -- 7. the memory budget is paid back once ---------------------------------------------------

def test_memory_budget_is_paid_back_once_for_derived_output(write, tmp_path: Path) -> None:
    """Batches built with ``batch.derive`` by a step and by a regrouping step after it are
    paid back once: at the end of the run nothing is in flight (never a negative count)."""
    import anyio

    from headrace.config import UserConfig, load_pipeline
    from headrace.engine import Runner, apply_projection, build_plan

    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "pad": "x" * 40} for i in range(5000)])
    pipeline = write("p.yaml", f"""
        version: 1
        name: budget
        source: {{use: jsonl, path: in.jsonl, block_size: 8192}}
        steps:
          - {{use: "{SUPPORT}:Tag"}}
          - {{use: "{SUPPORT}:PassOn"}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{memory_budget: 64KB}}
        """)
    plan = build_plan(load_pipeline(pipeline, (), {}, user_config=UserConfig()))
    apply_projection(plan)
    runner = Runner(plan, observers=[])
    lowest = [0]
    release = runner.budget.release  # type: ignore[union-attr]

    async def watched(batch: Any) -> None:
        await release(batch)
        lowest[0] = min(lowest[0], runner.budget.in_flight)  # type: ignore[union-attr]

    runner.budget.release = watched  # type: ignore[union-attr, method-assign]
    result = anyio.run(runner.run, False, backend="asyncio")
    assert result.status == "ok", result.summary
    assert len(read_jsonl(tmp_path / "out" / "o.jsonl")) == 5000
    budget = runner.budget
    assert budget is not None and budget.peak > 0
    assert lowest[0] >= 0, f"bytes in flight went down to {lowest[0]}"
    assert budget.in_flight == 0


# -- 8. the second signal and drain_timeout stop the run --------------------------------------

@pytest.mark.parametrize("how", ["second-signal", "drain-timeout"])
def test_a_stuck_process_executor_call_does_not_hold_the_run(write, tmp_path: Path,
                                                             runs: list[Run], how: str) -> None:
    """A function on ``executor: process`` that never returns: a second SIGINT, or the end
    of ``drain_timeout``, ends the run with exit 130 (no shielded wait without a limit)."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(10)])
    pipeline = write("p.yaml", f"""
        version: 1
        name: stuck
        source: {{use: jsonl, path: in.jsonl}}
        steps:
          - {{use: python, function: "{SUPPORT}:hang", mode: batch, format: arrow,
              executor: process}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{drain_timeout: 1}}
        """)
    marker = tmp_path / "started"
    run = Run(tmp_path, pipeline, env=_env(PROMISE_MARKER=str(marker)))
    runs.append(run)
    wait_until(marker.exists, run, "the call to start", timeout=60)
    run.signal(signal.SIGINT)
    if how == "second-signal":
        time.sleep(0.2)  # the first is being handled; not a timing assertion
        run.signal(signal.SIGINT)
    assert run.wait(15) == 130, run.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_stdin_source_waiting_for_input_stops_on_a_signal(write, tmp_path: Path,
                                                            runs: list[Run],
                                                            sig: signal.Signals,
                                                            code: int) -> None:
    """A ``path: '-'`` source whose pipe stays open without more data stops on a signal
    within ``drain_timeout`` (exit 130/143), not at the end of input."""
    pipeline = write("p.yaml", f"""
        version: 1
        name: stdin
        source: {{use: jsonl, path: "-", block_size: 4096}}
        steps:
          - {{use: python, function: "{SUPPORT}:slow", mode: batch, format: arrow}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{drain_timeout: 1}}
        """)
    progress = tmp_path / "progress"
    run = Run(tmp_path, pipeline, env=_env(PROMISE_SLEEP="0", PROMISE_PROGRESS=str(progress)),
              stdin=subprocess.PIPE)
    runs.append(run)
    assert run.proc.stdin is not None
    run.proc.stdin.write("".join(json.dumps({"id": i}) + "\n" for i in range(2000)).encode())
    run.proc.stdin.flush()  # and the pipe stays open, with nothing more to come
    try:
        wait_until(lambda: progress_of(progress) > 0, run, "the first records through")
        # Until what came has gone through and the source is left waiting on the pipe (it
        # holds the tail that does not fill a block): no progress for half a second.
        seen, since = progress_of(progress), time.monotonic()
        while time.monotonic() - since < 0.5:
            assert run.alive(), run.stderr
            time.sleep(0.05)
            if progress_of(progress) != seen:
                seen, since = progress_of(progress), time.monotonic()
        run.signal(sig)
        assert run.wait(10) == code, run.stderr
    finally:
        run.proc.stdin.close()


# -- 9. an aggregate does not hold dead letters -----------------------------------------------

def _bad_lines_input(path: Path, count: int) -> None:
    """``count`` lines, every fifth one not JSON (a source dead letter)."""
    path.write_text("".join("{not json\n" if i % 5 == 0 else
                            json.dumps({"id": i, "g": f"k{i % 3}"}) + "\n"
                            for i in range(count)), encoding="utf-8")


def _dead_letter_pipeline(write, max_failures: str):  # type: ignore[no-untyped-def]
    return write("p.yaml", f"""
        version: 1
        name: deadagg
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - {{use: python, function: "{SUPPORT}:slow", mode: batch, format: arrow}}
          - use: aggregate
            group_by: [g]
            metrics: {{n: "count(*)"}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{max_failures: {max_failures}}}
        """)


def test_max_failures_stops_a_run_early_upstream_of_an_aggregate(write, tmp_path: Path
                                                                 ) -> None:
    """Dead letters upstream of an aggregate count as they arrive: ``max_failures: 100``
    stops the run long before the end of its input (exit 1), their file written."""
    count = 6000
    _bad_lines_input(tmp_path / "in.jsonl", count)
    pipeline = _dead_letter_pipeline(write, "100")
    result = run_cli("run", str(pipeline), "--json", env=_env(PROMISE_SLEEP="0.02"),
                     timeout=120)
    assert result.code == 1, result.stderr
    summary = result.summary
    assert summary["records_in"] < count // 2, f"read on to the end: {summary}"
    assert summary["records_dead"] > 100
    dead = read_jsonl(tmp_path / "out" / "o.dead.jsonl")
    assert len(dead) == summary["records_dead"]


def test_dead_letters_upstream_of_an_aggregate_reach_their_file_during_the_run(
        write, tmp_path: Path, runs: list[Run]) -> None:
    """An aggregate does not hold upstream dead letters (and their records) until its
    flush: they are in the dead-letter file while the input is still being read."""
    count = 6000
    _bad_lines_input(tmp_path / "in.jsonl", count)
    pipeline = _dead_letter_pipeline(write, "100%")
    progress = tmp_path / "progress"
    partial = tmp_path / "out" / ".o.dead.jsonl.partial"
    run = Run(tmp_path, pipeline, env=_env(PROMISE_SLEEP="0.05", PROMISE_PROGRESS=str(progress)))
    runs.append(run)
    wait_until(lambda: progress_of(progress) >= count // 2, run, "half the input through")
    size = partial.stat().st_size if partial.exists() else 0
    assert size > 0, "no dead letter written with half the input read: the aggregate holds them"
    assert run.wait(120) == 0, run.stderr
    assert len(read_jsonl(tmp_path / "out" / "o.dead.jsonl")) == count // 5


# -- 10. a signal while the output is being published -----------------------------------------

def test_a_signal_during_publication_does_not_strand_the_output(write, tmp_path: Path,
                                                                runs: list[Run]) -> None:
    """SIGTERM while the sink publishes: either the run exits 0 (the output is complete) or
    it exits 143 and ``--resume`` finishes cleanly; never "interrupted" and a refused resume."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(500)])
    pipeline = write("p.yaml", f"""
        version: 1
        name: pubsig
        source: {{use: jsonl, path: in.jsonl}}
        sink: {{use: "{SUPPORT}:SlowFinishJsonl", path: out/o.jsonl, finish_delay: 3}}
        """)
    run = Run(tmp_path, pipeline, env=_env())
    runs.append(run)
    wait_until(lambda: ledger(tmp_path, "pubsig")[0] == "publishing", run, "the publication")
    run.signal(signal.SIGTERM)
    code = run.wait(60)
    if code == 0:
        assert run.summary["status"] == "ok"
    else:
        assert code == 143, run.stderr
        resumed = run_cli("run", str(pipeline), "--resume", "--json", env=_env())
        assert resumed.code == 0, (f"interrupted during publication (exit 143), then "
                                   f"--resume exit {resumed.code}: {resumed.stderr}")
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")] == list(range(500))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["o.jsonl"]


# -- suspected ---------------------------------------------------------------------------------

def test_a_failed_publication_keeps_the_committed_output_for_resume(write, tmp_path: Path
                                                                    ) -> None:
    """A publication that fails (exit 1) leaves the committed output in place: ``--resume``
    publishes every record exactly once."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(500)])
    marker = tmp_path / "failed-once"
    pipeline = write("p.yaml", f"""
        version: 1
        name: pubfail
        source: {{use: jsonl, path: in.jsonl}}
        sink: {{use: "{SUPPORT}:SlowFinishJsonl", path: out/o.jsonl, fail_marker: {marker}}}
        """)
    failed = run_cli("run", str(pipeline), "--json", env=_env())
    assert failed.code == 1 and marker.exists(), failed.stderr
    resumed = run_cli("run", str(pipeline), "--resume", "--json", env=_env())
    assert resumed.code == 0, resumed.stderr
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")] == list(range(500))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["o.jsonl"]


def test_no_stale_dead_letter_partial_when_a_run_writes_none(write, tmp_path: Path,
                                                             runs: list[Run]) -> None:
    """A run that writes no dead letters leaves no hidden dead-letter file behind, also when
    an earlier killed run of the pipeline had written some."""
    rows = [json.dumps({"id": i}) for i in range(3000)]
    (tmp_path / "in.jsonl").write_text("{bad\n" + "\n".join(rows) + "\n", encoding="utf-8")
    pipeline = write("p.yaml", f"""
        version: 1
        name: stale
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - {{use: python, function: "{SUPPORT}:slow", mode: batch, format: arrow}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{checkpoint_interval: 1ms, max_failures: 10}}
        """)
    run = Run(tmp_path, pipeline, env=_env(PROMISE_SLEEP="0.05"))
    runs.append(run)
    wait_until(lambda: checkpointed_records(tmp_path, "stale") > 0, run, "a checkpoint")
    assert (tmp_path / "out" / ".o.dead.jsonl.partial").exists()
    run.signal(signal.SIGKILL)
    run.wait(30)

    (tmp_path / "in.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")  # fixed
    fresh = run_cli("run", str(pipeline), "--json", env=_env(PROMISE_SLEEP="0"))
    assert fresh.code == 0, fresh.stderr
    assert fresh.summary["records_dead"] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["o.jsonl"]


def test_dead_letters_through_a_regrouping_step_keep_their_own_position(write, tmp_path: Path
                                                                        ) -> None:
    """Dead letters that pass a regrouping step holding several batches name their own line
    and the byte range of the batch that held it, not the last held batch's."""
    rng = random.Random(11)
    bad = set(rng.sample(range(1, 2000), 20))
    lines = ["{bad" if i in bad else json.dumps({"id": i}) for i in range(2000)]
    data = "".join(line + "\n" for line in lines).encode()
    (tmp_path / "in.jsonl").write_bytes(data)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    pipeline = write("p.yaml", """
        version: 1
        name: dlpos
        source: {use: jsonl, path: in.jsonl, block_size: 4096}
        steps:
          - {use: rebatch, rows: 100000}
        sink: {use: jsonl, path: out/o.jsonl}
        runtime: {max_failures: 100}
        """)
    result = run_cli("run", str(pipeline), "--json")
    assert result.code == 0, result.stderr
    dead = read_jsonl(tmp_path / "out" / "o.dead.jsonl")
    assert sorted(d["position"]["line"] for d in dead) == sorted(i + 1 for i in bad)
    wrong = [d["position"] for d in dead
             if not d["position"]["start"] <= offsets[d["position"]["line"] - 1]
             < d["position"]["end"]]
    assert not wrong, f"{len(wrong)} of {len(dead)} dead letters name another batch: {wrong[:2]}"


def test_an_empty_parquet_output_has_the_same_schema_with_and_without_checkpoints(
        write, tmp_path: Path) -> None:
    """A Parquet output with no rows has the same schema whether the run kept checkpoints
    or not."""
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "name": f"n{i}"} for i in range(100)])
    schemas = []
    for checkpoint in ("true", "false"):
        pipeline = write(f"p{checkpoint}.yaml", f"""
            version: 1
            name: empty{checkpoint}
            source: {{use: jsonl, path: in.jsonl}}
            steps:
              - {{use: filter, where: "id < 0"}}
            sink: {{use: parquet, path: out/{checkpoint}.parquet}}
            runtime: {{checkpoint: {checkpoint}}}
            """)
        result = run_cli("run", str(pipeline), "--json")
        assert result.code == 0, result.stderr
        schemas.append(pq.read_schema(tmp_path / "out" / f"{checkpoint}.parquet"))
    with_checkpoints, without = schemas
    assert with_checkpoints.names == without.names, (with_checkpoints, without)
    assert with_checkpoints.equals(without)


def test_a_failure_upstream_does_not_make_a_regrouping_step_flush(write, tmp_path: Path
                                                                  ) -> None:
    """When a step upstream fails the run, a regrouping step downstream never flushes what
    it holds (its input did not end), and nothing is published."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(3000)])
    marker = tmp_path / "flushed"
    pipeline = write("p.yaml", f"""
        version: 1
        name: upstream
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - {{use: python, function: "{SUPPORT}:fail_at_1000", on_error: fail}}
          - {{use: "{SUPPORT}:HoldAll", flush_marker: "{marker}"}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        """)
    result = run_cli("run", str(pipeline), "--json", env=_env())
    assert result.code == 1, result.stderr
    assert result.summary["status"] == "failed"
    assert "id 1000 is poison" in result.summary["error"]
    assert not marker.exists()
    assert not (tmp_path / "out" / "o.jsonl").exists()


def test_sqlite_insert_refuses_a_table_whose_rowid_is_the_data_key(write, tmp_path: Path
                                                                   ) -> None:
    """A checkpointed insert-mode run into a table with an INTEGER PRIMARY KEY (rowids that
    follow the data, not the write order, so the resume cut would be wrong) fails with one
    line naming the column and the way out."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": 100 - i, "v": i} for i in range(100)])
    (tmp_path / "out").mkdir()
    with contextlib.closing(sqlite3.connect(tmp_path / "out" / "t.db")) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        db.commit()
    pipeline = write("p.yaml", """
        version: 1
        name: rowid
        source: {use: jsonl, path: in.jsonl}
        sink: {use: sqlite, path: out/t.db, table: t}
        """)
    result = run_cli("run", str(pipeline), "--json")
    assert result.code == 1, result.stderr
    error = result.summary["error"]
    assert "'id'" in error and "INTEGER PRIMARY KEY" in error and "upsert" in error
    upsert = run_cli("run", str(pipeline), "--json", "--set", "sink.mode=upsert",
                     "--set", "sink.key=[id]")
    assert upsert.code == 0, upsert.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "out" / "t.db")) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 100


@pytest.mark.parametrize("executor", ["thread", "async"])
def test_a_batch_function_s_transient_error_is_retried(write, tmp_path: Path,
                                                       executor: str) -> None:
    """A batch-mode python function raising a transient error (a reset connection) is
    called again by the step's retry policy, and every record reaches the sink."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(3000)])
    pipeline = write("p.yaml", f"""
        version: 1
        name: flaky
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - use: python
            function: "{SUPPORT}:flaky_batches"
            mode: batch
            format: arrow
            executor: {executor}
            retry: {{attempts: 3, base: 0.001}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        """)
    result = run_cli("run", str(pipeline), "--json", env=_env())
    assert result.code == 0, result.stderr
    assert result.summary["records_out"] == 3000
    assert result.summary["steps"][0]["retries"] == result.summary["steps"][0]["batches"]
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")] == list(range(3000))


@pytest.mark.parametrize("attempts", [1, 2])
def test_a_batch_function_that_stays_down_dead_letters_its_records(write, tmp_path: Path,
                                                                   attempts: int) -> None:
    """When a batch function's transient errors outlast its attempts (one attempt: none to
    retry), each record of the batch is a dead letter with the attempts made; the run goes on."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(50)])
    pipeline = write("p.yaml", f"""
        version: 1
        name: down
        source: {{use: jsonl, path: in.jsonl}}
        steps:
          - use: python
            function: "{SUPPORT}:always_down"
            mode: batch
            format: arrow
            retry: {{attempts: {attempts}, base: 0.001}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{max_failures: 100}}
        """)
    result = run_cli("run", str(pipeline), "--json", env=_env())
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    letters = read_jsonl(tmp_path / "out" / "o.dead.jsonl")
    assert sorted(e["record"]["id"] for e in letters) == list(range(50))
    assert {(e["error"], e["attempts"]) for e in letters} == {("ConnectionError", attempts)}


@pytest.mark.parametrize("on_error", ["dead_letter", "skip"])
def test_dead_letters_a_regrouping_step_makes_in_flush_are_written(write, tmp_path: Path,
                                                                   on_error: str) -> None:
    """Records a regrouping step fails in ``flush`` reach the dead-letter file (or count as
    filtered with ``on_error: skip``): they end somewhere, like a call's failures."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(200)])
    pipeline = write("p.yaml", f"""
        version: 1
        name: judge
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - {{use: "{SUPPORT}:JudgeAtEnd", on_error: {on_error}}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{max_failures: 1000}}
        """)
    result = run_cli("run", str(pipeline), "--json", env=_env())
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")] == list(range(0, 200, 2))
    dead_file = tmp_path / "out" / "o.dead.jsonl"
    if on_error == "skip":
        assert result.summary["records_filtered"] == 100 and not dead_file.exists()
    else:
        assert sorted(e["record"]["id"] for e in read_jsonl(dead_file)) == list(range(1, 200, 2))


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_stdin(write, tmp_path: Path, compression: str) -> None:
    """A compressed stream on stdin (``path: '-'`` with ``compression``) is read whole."""
    import pyarrow as pa

    raw = "".join(json.dumps({"id": i}) + "\n" for i in range(5000)).encode()
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, compression) as stream:
        stream.write(raw)
    pipeline = write("p.yaml", f"""
        version: 1
        name: zin
        source: {{use: jsonl, path: "-", compression: {compression}}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        """)
    result = run_cli("run", str(pipeline), "--json", stdin=sink.getvalue().to_pybytes())
    assert result.code == 0, result.stderr
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")] == list(range(5000))


def test_a_trickling_stdin_stops_on_a_signal(write, tmp_path: Path, runs: list[Run]) -> None:
    """A stdin source fed a line every 20 ms (input never pauses long) still stops on the
    first signal, drains and exits 130 with every record it read accounted for."""
    pipeline = write("p.yaml", """
        version: 1
        name: trickle
        source: {use: jsonl, path: "-"}
        sink: {use: jsonl, path: out/o.jsonl}
        runtime: {drain_timeout: 30}
        """)
    run = Run(tmp_path, pipeline, env={}, stdin=subprocess.PIPE)
    runs.append(run)
    assert run.proc.stdin is not None
    deadline = time.monotonic() + 3
    number = 0
    while time.monotonic() < deadline:
        run.proc.stdin.write(json.dumps({"id": number}).encode() + b"\n")
        run.proc.stdin.flush()
        number += 1
        time.sleep(0.02)
    run.signal(signal.SIGINT)
    with contextlib.suppress(BrokenPipeError):
        for _ in range(100):  # keeps trickling while the run stops
            run.proc.stdin.write(json.dumps({"id": number}).encode() + b"\n")
            run.proc.stdin.flush()
            number += 1
            time.sleep(0.02)
            if run.proc.poll() is not None:
                break
    code = run.wait(15)
    with contextlib.suppress(BrokenPipeError):
        run.proc.stdin.close()
    assert code == 130, run.stderr
    summary = run.summary
    assert_accounted(summary)
    ids = [r["id"] for r in read_jsonl(tmp_path / "out" / "o.jsonl")]
    assert ids == list(range(len(ids))) and summary["records_out"] == len(ids) > 0


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_a_resumed_run_reports_the_whole_run_s_totals(write, tmp_path: Path, runs: list[Run],
                                                      sink: str) -> None:
    """After a stop and ``--resume``, the summary's ``run_totals`` give the counts of the
    whole run (those of an uninterrupted run), beside the resumed part's own counts."""
    lines = ["{bad" if i % 97 == 5 else json.dumps({"id": i, "v": i % 7}) for i in range(3000)]
    for folder in (tmp_path, tmp_path / "ref"):
        folder.mkdir(exist_ok=True)
        (folder / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = ("{use: jsonl, path: out/o.jsonl}" if sink == "jsonl"
              else "{use: sqlite, path: out/o.db, table: t}")
    text = f"""
        version: 1
        name: totals
        source: {{use: jsonl, path: in.jsonl, block_size: 4096}}
        steps:
          - {{use: python, function: "{SUPPORT}:slow", mode: batch, format: arrow}}
          - {{use: filter, where: "v > 1"}}
        sink: {target}
        runtime: {{max_failures: 1000, checkpoint_interval: 1ms}}
        """
    reference = run_cli("run", str(write("ref/p.yaml", text)), "--json",
                        env=_env(PROMISE_SLEEP="0"))
    assert reference.code == 0, reference.stderr
    progress = tmp_path / "progress"
    pipeline = write("p.yaml", text)
    run = Run(tmp_path, pipeline, env=_env(PROMISE_SLEEP="0.05",
                                           PROMISE_PROGRESS=str(progress)))
    runs.append(run)
    wait_until(lambda: progress_of(progress) >= 1000, run, "1000 records through")
    run.signal(signal.SIGINT)
    assert run.wait(60) == 130, run.stderr
    resumed = run_cli("run", str(pipeline), "--resume", "--json", env=_env(PROMISE_SLEEP="0"))
    assert resumed.code == 0, resumed.stderr
    summary = resumed.summary
    assert summary["records_in"] < 3000 and summary["checkpoint"]["resumed_after"] > 0
    keys = ("records_in", "records_out", "records_filtered", "records_dead")
    assert summary["run_totals"] == {k: reference.summary[k] for k in keys}
