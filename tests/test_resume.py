"""Resume from the CLI: what continues, what refuses, and the run lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import read_jsonl, run_cli

SLOW = """
import os, time
from pathlib import Path
def slow(record):
    Path(os.environ["HEADRACE_TEST_MARKER"]).touch()
    time.sleep(0.001)
    return record
"""
ROWS = 8000


def _interrupted_run(write, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A pipeline whose run was stopped by SIGINT after its first records."""
    write("in.csv", "id,v\n" + "".join(f"{i},{i}\n" for i in range(ROWS)))
    write("slowfn.py", SLOW)
    path = write("p.yaml", """
        version: 1
        name: resumable
        source: {use: csv, path: in.csv, block_size: 4096}
        steps:
          - {use: python, function: "slowfn:slow"}
        sink: {use: jsonl, path: out/o.jsonl}
        """)
    marker = tmp_path / "started"
    env = {**os.environ, "HEADRACE_TEST_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "headrace", "-q", "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    assert not (path.parent / "out" / "o.jsonl").exists()
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return {"HEADRACE_TEST_MARKER": str(tmp_path / "again")}


def test_resume_command_by_run_directory(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _interrupted_run(write, tmp_path)
    run_dir = path.parent / ".headrace" / "runs" / "resumable"
    assert json.loads((run_dir / "run.json").read_text())["pipeline"] == str(path.resolve())
    result = run_cli("resume", str(run_dir), "--json", env=_env(tmp_path))
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["checkpoint"]["resumed_after"] > 0
    assert summary["checkpoint"]["records"] == ROWS
    assert [r["id"] for r in read_jsonl(path.parent / "out" / "o.jsonl")] == list(range(ROWS))
    again = run_cli("run", str(path), "--resume", env=_env(tmp_path))
    assert again.code == 2 and "the last run completed" in again.stderr


def test_changed_pipeline_refuses_to_resume(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _interrupted_run(write, tmp_path)
    path.write_text(path.read_text().replace("out/o.jsonl", "out/other.jsonl"))
    result = run_cli("run", str(path), "--resume", env=_env(tmp_path))
    assert result.code == 2
    assert "cannot resume: the pipeline changed" in result.stderr
    assert "Traceback" not in result.stderr
    # A runtime setting is not part of the pipeline's identity: this resumes.
    path.write_text(path.read_text().replace("out/other.jsonl", "out/o.jsonl"))
    ok = run_cli("run", str(path), "--resume", "--set", "runtime.channel_size=4",
                 env=_env(tmp_path))
    assert ok.code == 0, ok.stderr


def test_changed_input_refuses_to_resume(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _interrupted_run(write, tmp_path)
    with (path.parent / "in.csv").open("a") as handle:
        handle.write(f"{ROWS},{ROWS}\n")
    result = run_cli("run", str(path), "--resume", env=_env(tmp_path))
    assert result.code == 2
    assert "cannot resume: the input changed" in result.stderr
    fresh = run_cli("run", str(path), env=_env(tmp_path))  # starting over is always allowed
    assert fresh.code == 0, fresh.stderr
    assert len(read_jsonl(path.parent / "out" / "o.jsonl")) == ROWS + 1


def test_a_second_run_of_the_same_pipeline_is_refused(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from headrace.engine import Ledger

    path = _interrupted_run(write, tmp_path)
    holder = Ledger(path.parent / ".headrace" / "runs" / "resumable")
    holder.open()  # as a running headrace would
    try:
        result = run_cli("run", str(path), "--resume", env=_env(tmp_path))
    finally:
        holder.close()
    assert result.code == 1
    assert "another run of this pipeline" in result.stderr


def test_resume_without_checkpoints_is_a_clear_error(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write("in.csv", "id\n1\n")
    path = write("p.yaml", """
        version: 1
        name: stdout-run
        source: {use: csv, path: in.csv}
        sink: {use: stdout}
        """)
    result = run_cli("run", str(path), "--resume")
    assert result.code == 2
    assert "cannot resume" in result.stderr
