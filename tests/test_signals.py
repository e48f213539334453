"""Ctrl-C and SIGTERM on a real subprocess: drain, publish, summary, exit 130/143, no asyncio
warnings; a second signal stops at once and leaves nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import assert_accounted, read_jsonl

SLOW = """
import os, time
from pathlib import Path

def slow(record):
    marker = Path(os.environ["HEADRACE_TEST_MARKER"])
    if not marker.exists():
        marker.write_text("started")
    time.sleep(0.0005)
    return record
"""


# 0.5 ms a record: a run of RECORDS takes 6 s or more, far longer than the 0.3 s before the
# signal plus the drain of what is in flight, so the signal always lands mid-run; every
# --resume processes the rest at the same pace (40,000 took 20 s a resume for the same claim).
RECORDS = 12_000


def start(write, tmp_path: Path, *options: str,  # type: ignore[no-untyped-def]
          checkpoint: bool = True) -> tuple[subprocess.Popen[bytes], Path]:
    write("in.csv", "id,v\n" + "".join(f"{i},{i}\n" for i in range(RECORDS)))
    write("slowfn.py", SLOW)
    flag = "true" if checkpoint else "false"
    path = write("p.yaml", f"""
        version: 1
        name: sig
        source: {{use: csv, path: in.csv, block_size: 4096}}
        steps:
          - {{use: python, function: "slowfn:slow"}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        runtime: {{checkpoint: {flag}}}
        """)
    marker = tmp_path / "started"
    env = {**os.environ, "HEADRACE_TEST_MARKER": str(marker), "PYTHONWARNINGS": "default"}
    proc = subprocess.Popen([sys.executable, "-m", "headrace", "run", str(path), "--json",
                             *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    time.sleep(0.3)
    return proc, path.parent


def resume_and_check(path: Path) -> None:
    """``--resume`` finishes the run: every record exactly once, in order."""
    result = subprocess.run([sys.executable, "-m", "headrace", "run", str(path / "p.yaml"),
                             "--resume", "--json"], capture_output=True, timeout=60, check=False,
                            env={**os.environ, "HEADRACE_TEST_MARKER": str(path / "m2")})
    assert result.returncode == 0, result.stderr.decode()
    rows = read_jsonl(path / "out" / "o.jsonl")
    assert [r["id"] for r in rows] == list(range(RECORDS))
    assert sorted(p.name for p in (path / "out").iterdir()) == ["o.jsonl"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint", "no-checkpoint"])
def test_signal_drains(write, tmp_path: Path, sig: signal.Signals, code: int,
                       checkpoint: bool) -> None:
    """One signal: the source stops, in-flight work drains into the sink, exit 130/143.
    With checkpoints the partial output waits for --resume; without, it is published."""
    proc, base = start(write, tmp_path, checkpoint=checkpoint)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    text = stderr.decode()
    assert proc.returncode == code, text
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["status"] == "interrupted"
    assert summary["interrupted_by"] == sig.name
    assert_accounted(summary)
    assert 0 < summary["records_out"] < RECORDS
    for warning in ("Task was destroyed", "never retrieved", "was never awaited", "Traceback"):
        assert warning not in text
    if not checkpoint:
        rows = read_jsonl(base / "out" / "o.jsonl")
        assert [r["id"] for r in rows] == list(range(summary["records_out"]))
        assert [p.name for p in (base / "out").iterdir()] == ["o.jsonl"]
        return
    assert summary["checkpoint"]["records"] == summary["records_in"]  # all drained, committed
    assert not (base / "out" / "o.jsonl").exists()
    resume_and_check(base)


def test_drain_timeout_cuts_a_slow_drain(write, tmp_path: Path) -> None:
    """A drain longer than runtime.drain_timeout is cancelled: exit 130, nothing published;
    the last checkpoint is consistent, so --resume completes the output exactly."""
    proc, base = start(write, tmp_path, "--drain-timeout", "0.05")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["status"] == "interrupted"
    assert not (base / "out" / "o.jsonl").exists()
    resume_and_check(base)


def test_drain_timeout_without_checkpoints_discards(write, tmp_path: Path) -> None:
    proc, base = start(write, tmp_path, "--drain-timeout", "0.05", checkpoint=False)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["status"] == "interrupted" and summary["output_discarded"] is True
    out = base / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_second_signal_stops_at_once_and_resume_completes(write, tmp_path: Path) -> None:
    """Two Ctrl-Cs: stop now, exit 130, nothing under the final name; --resume completes."""
    proc, base = start(write, tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    assert not (base / "out" / "o.jsonl").exists()
    assert "Task was destroyed" not in stderr.decode()
    resume_and_check(base)
