"""The run directory keeps nothing secret and only its owner may read it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from .conftest import read_jsonl, run_cli

SECRET = "Bearer s3cr3t-t0ken-value"


def _pipeline(write) -> Path:  # type: ignore[no-untyped-def]
    """A run that fails fast: its sink posts to a port where nothing listens."""
    (write("in.jsonl", "".join(json.dumps({"id": i}) + "\n" for i in range(5))))
    return write("p.yaml", """
        version: 1
        name: secretive
        source: {use: jsonl, path: in.jsonl}
        sink:
          use: http
          url: http://127.0.0.1:9/collect
          retry: {attempts: 1}
        runtime: {max_failures: 100}
        """)


def test_a_secret_set_on_the_command_line_is_not_stored(write, tmp_path: Path) -> None:
    """``--set sink.headers.Authorization=...`` (a secret by its name) and a DSN with a
    password are kept out of ``run.json``, the summary and every file of the run directory;
    the other ``--set`` values are kept for ``headrace resume``."""
    pipeline = _pipeline(write)
    result = run_cli("run", str(pipeline), "--json",
                     "--set", f"sink.headers.Authorization={SECRET}",
                     "--set", "sink.headers.X-Db=postgresql://me:pw-9876@db/x",
                     "--set", "sink.per_host=4")
    assert result.code in (0, 1), result.stderr
    run_dir = tmp_path / ".headrace" / "runs" / "secretive"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["overrides"] == ["sink.per_host=4"]
    assert info["secret_overrides"] == ["sink.headers.Authorization", "sink.headers.X-Db"]
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"s3cr3t-t0ken" not in data and b"pw-9876" not in data, path
    assert "s3cr3t-t0ken" not in result.stdout + result.stderr
    for letter in read_jsonl(tmp_path / "secretive.dead.jsonl") if (
            tmp_path / "secretive.dead.jsonl").exists() else []:
        assert "s3cr3t-t0ken" not in json.dumps(letter)


def test_resume_asks_for_a_secret_it_did_not_store(write, tmp_path: Path) -> None:
    """``headrace resume RUN`` of a run given a secret ``--set`` exits 2 naming the key,
    rather than resuming without it; given again with ``--set`` it goes ahead."""
    pipeline = _pipeline(write)
    run_cli("run", str(pipeline), "--set", f"sink.headers.Authorization={SECRET}")
    run_dir = tmp_path / ".headrace" / "runs" / "secretive"
    refused = run_cli("resume", str(run_dir))
    assert refused.code == 2, refused.stderr
    assert "sink.headers.Authorization" in refused.stderr
    assert "Traceback" not in refused.stderr
    again = run_cli("resume", str(run_dir), "--set", f"sink.headers.Authorization={SECRET}")
    assert "sink.headers.Authorization on the command line" not in again.stderr


def test_the_run_directory_is_owner_only(write, tmp_path: Path) -> None:
    """The run directory is 0700 and its ledger and run files 0600."""
    pipeline = _pipeline(write)
    run_cli("run", str(pipeline))
    run_dir = tmp_path / ".headrace" / "runs" / "secretive"
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    for name in ("ledger.sqlite", "run.json", "summary.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
