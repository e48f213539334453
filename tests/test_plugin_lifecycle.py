"""Plugin lifecycle in real ``headrace run`` subprocesses: the order of open/close, close
always called (after failures and Ctrl-C too), teardown errors reported without masking the
first error, each failure named by plugin and phase."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import HEADRACE, run_cli

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = """\
version: 1
name: lifecycle
source:
  use: tests.lifecycle_plugins:RecordingSource
  batches: {batches}
  delay: {delay}
steps:
  - use: tests.lifecycle_plugins:RecordingStep
    id: rec
sink:
  use: tests.lifecycle_plugins:RecordingSink
  block: {block}
runtime:
  checkpoint_interval: 1ms
"""


def _setup(tmp_path: Path, *, fail: str = "", batches: int = 3, delay: float = 0.0,
           block: float = 0.0) -> tuple[Path, dict[str, str]]:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE.format(batches=batches, delay=delay, block=block))
    log = tmp_path / "lifecycle.log"
    env = {"LIFECYCLE_LOG": str(log), "LIFECYCLE_FAIL": fail,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return pipeline, env


def _events(tmp_path: Path) -> list[str]:
    return (tmp_path / "lifecycle.log").read_text().split()


def _assert_closed_once(events: list[str]) -> None:
    """Every plugin opened (or whose open was attempted) is closed exactly once."""
    for kind in ("source", "step", "sink"):
        opened = events.count(f"{kind}.open")
        assert events.count(f"{kind}.close") == opened, (kind, events)


def test_order_of_a_clean_run(tmp_path: Path) -> None:
    """Sinks open before the source starts; steps close, then the source, then the sink."""
    pipeline, env = _setup(tmp_path)
    result = run_cli("run", str(pipeline), "--json", env=env)
    assert result.code == 0, result.stderr
    events = _events(tmp_path)
    assert events[:2] == ["sink.open", "source.open"]
    assert events.index("source.open") < events.index("source.read")
    assert events.index("step.close") < events.index("source.close") < events.index(
        "sink.close")
    assert events.index("sink.finish") < events.index("sink.close")
    assert events[-1] == "sink.close"
    _assert_closed_once(events)
    assert result.summary["records_out"] == 30


FAILURES = {
    "sink.open": "sink 'tests.lifecycle_plugins:RecordingSink' failed in open",
    "source.open": "source 'tests.lifecycle_plugins:RecordingSource' failed in open",
    "step.open": "step 'rec' failed in open",
    "source.read": "failed in read",
    "sink.write": "failed in write",
    "sink.checkpoint": "failed in checkpoint",
    "sink.finish": "failed in finish",
    "source.close": "failed in close",
    "step.close": "step 'rec' failed in close",
    "sink.close": "failed in close",
}


@pytest.mark.parametrize("phase", list(FAILURES))
def test_a_plugin_raising_is_named_and_everything_is_closed(tmp_path: Path,
                                                            phase: str) -> None:
    """A plugin raising in any phase: exit 1, one line naming the plugin and the phase
    (no traceback), and every plugin that was opened is closed."""
    pipeline, env = _setup(tmp_path, fail=phase)
    result = run_cli("run", str(pipeline), env=env)
    assert result.code == 1, result.stderr
    assert FAILURES[phase] in result.stderr
    assert f"RuntimeError: boom in {phase}" in result.stderr
    assert "Traceback" not in result.stderr
    events = _events(tmp_path)
    _assert_closed_once(events)
    if phase == "sink.open":
        assert "source.open" not in events  # the source never starts without its sink
    if phase in ("sink.write", "source.read", "step.open"):
        assert "sink.finish" not in events and "sink.abort" in events


def test_teardown_error_does_not_mask_the_first_error(tmp_path: Path) -> None:
    """The write fails and the source's close fails too: the run reports the write error;
    the close error is logged and listed in the summary, not lost."""
    pipeline, env = _setup(tmp_path, fail="sink.write,source.close")
    result = run_cli("run", str(pipeline), "--json", env=env)
    assert result.code == 1
    summary = result.summary
    assert "failed in write" in summary["error"]
    assert any("failed in close" in e and "boom in source.close" in e
               for e in summary["teardown_errors"])
    assert "boom in source.close" in result.stderr
    _assert_closed_once(_events(tmp_path))


def test_ctrl_c_closes_every_plugin(tmp_path: Path) -> None:
    """SIGINT while batches flow: drain, close every plugin once, exit 130."""
    pipeline, env = _setup(tmp_path, batches=10_000, delay=0.01)
    proc = subprocess.Popen([*HEADRACE, "run", str(pipeline), "--json"], cwd=tmp_path,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _count(tmp_path, "sink.write") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert json.loads(out.decode().splitlines()[-1])["status"] == "interrupted"
    events = _events(tmp_path)
    _assert_closed_once(events)
    assert events[-1] == "sink.close"
    assert b"Task was destroyed" not in err and b"never retrieved" not in err


def _count(tmp_path: Path, event: str) -> int:
    log = tmp_path / "lifecycle.log"
    return log.read_text().split().count(event) if log.exists() else 0


def test_a_plugin_blocking_the_loop_is_named(tmp_path: Path) -> None:
    """A sink that blocks the event loop in ``write``: a warning names its file and
    function; the run still completes."""
    pipeline, env = _setup(tmp_path, batches=2, block=0.8)
    result = run_cli("run", str(pipeline), "--json", env=env)
    assert result.code == 0, result.stderr
    assert "the event loop was blocked" in result.stderr
    assert "lifecycle_plugins.py" in result.stderr and "in write()" in result.stderr
    assert result.summary["loop_stalls"]["count"] >= 1


def test_transactional_sink_checkpoint_wins_over_a_stale_ledger(tmp_path: Path) -> None:
    """Killed between the sink's own commit (rows + checkpoint in one transaction) and the
    engine's ledger: ``--resume`` continues from the sink's checkpoint, so no row repeats."""
    pipeline, env = _setup(tmp_path, batches=20)
    text = pipeline.read_text().replace(
        "use: tests.lifecycle_plugins:RecordingSink\n  block: 0.0",
        "use: tests.lifecycle_plugins:TransactionalSink\n  path: db.json")
    pipeline.write_text(text)
    killed = run_cli("run", str(pipeline), env={**env, "LIFECYCLE_EXIT_AFTER_COMMIT": "3"})
    assert killed.code == 9, killed.stderr
    rows = json.loads((tmp_path / "db.json").read_text())["rows"]
    assert rows and len(rows) < 200
    resumed = run_cli("run", str(pipeline), "--resume", "--json", env=env)
    assert resumed.code == 0, resumed.stderr
    rows = json.loads((tmp_path / "db.json").read_text())["rows"]
    assert sorted(rows) == list(range(200))  # every id once: none lost, none repeated
