"""Shared helpers: real subprocesses of ``headrace``, pipeline files in a temp folder."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HEADRACE = [sys.executable, "-m", "headrace"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            stdin: bytes | None = None, timeout: float = 120) -> CliResult:
    """Run ``headrace ARGS`` as a real subprocess."""
    # Not the developer's own user config (tests that want one set HEADRACE_CONFIG).
    full_env = {**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull, **(env or {})}
    proc = subprocess.run(
        [*HEADRACE, *args], cwd=cwd, env=full_env, input=stdin,
        capture_output=True, timeout=timeout, check=False,
    )
    return CliResult(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                     proc.stderr.decode("utf-8", "replace"))


def assert_accounted(summary: dict[str, Any]) -> None:
    """Every record ends somewhere: in the sink, filtered, or dead-lettered."""
    assert summary["records_in"] == (
        summary["records_out"] + summary["records_filtered"] + summary["records_dead"]
    ), summary


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    """write(name, text) -> Path: a file under tmp_path, text dedented."""

    def _write(name: str, text: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return _write


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@contextlib.contextmanager
def demo_api(*args: str) -> Iterator[str]:
    """A real ``headrace demo-api`` subprocess on a free port; yields its base URL."""
    proc = subprocess.Popen([*HEADRACE, "demo-api", "--port", "0", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"demo-api did not start: {line!r}"
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
