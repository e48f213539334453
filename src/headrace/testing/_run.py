"""``run_pipeline``: a whole pipeline, in-process, through the real engine."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from headrace.config import UserConfig, load_pipeline
from headrace.engine import Runner, apply_projection, build_plan

from ._list import ListSink

PIPELINE_FILE = "pipeline.yaml"


@dataclass
class RunOutcome:
    """How a run ended, and what it produced.

    ``status`` is the summary's: "ok", "failed" or "interrupted". ``records`` are what a
    ``ListSink`` collected ([] for other sinks); ``dead`` the published dead-letter file's
    entries, parsed; ``error`` the failure as one line (also "N records dead-lettered
    (max_failures: M)" when dead letters failed the run), or None.
    """

    status: str
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@contextmanager
def _folder(base_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    if base_dir is not None:
        path = Path(base_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="headrace-test-") as temp:
        yield Path(temp)


def _write_pipeline(pipeline: dict[str, Any] | str, folder: Path) -> Path:
    path = folder / PIPELINE_FILE
    if isinstance(pipeline, dict):
        data = {"version": 1, "name": "test", **pipeline}
        # JSON is YAML: the loader reads it, with line numbers in its messages.
        path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    else:
        path.write_text(pipeline, encoding="utf-8")
    return path


def _read_dead(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_pipeline(
    pipeline: dict[str, Any] | str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    environ: Mapping[str, str] | None = None,
    user_config: UserConfig | None = None,
) -> RunOutcome:
    """Run a pipeline through the real engine, in this thread, and return its outcome.

    ``pipeline`` is a mapping (written as ``pipeline.yaml`` into ``base_dir``; ``version: 1``
    and ``name: test`` are filled in when missing), YAML text (written likewise), or the
    path of a pipeline file (then ``base_dir`` is not used: paths are relative to the file).
    Without ``base_dir`` a temporary folder is used and removed afterwards, with the
    outputs written into it. ``overrides`` are ``--set`` assignments (``"sink.path=x.jsonl"``);
    ``resume`` continues an interrupted run, as ``headrace run --resume`` does.
    ``environ`` (default ``os.environ``) gives ``${VAR}`` values and ``HEADRACE_<PLUGIN>__``
    variables. The user config file is not read (a test should not depend on the machine):
    pass ``user_config`` to test with one.

    Problems with the pipeline itself (a missing key, bad options, an unknown plugin) raise
    the ``HeadraceError`` that ``headrace validate`` would report; failures while running
    come back as ``status == "failed"`` with ``error`` set. Signal handlers are not
    installed, the event loop is plain asyncio, and the garbage-collector tuning of
    ``headrace run`` is left out. Call it from synchronous code: it runs its own event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_pipeline runs its own event loop: call it from synchronous "
                           "code (or through anyio.to_thread.run_sync)")
    with _folder(base_dir) as folder:
        if isinstance(pipeline, dict | str):
            path = _write_pipeline(pipeline, folder)
        else:
            path = Path(pipeline)
        loaded = load_pipeline(path, overrides, environ,
                               user_config=user_config if user_config is not None
                               else UserConfig())
        plan = build_plan(loaded)
        collector = plan.sink.options.name if isinstance(plan.sink, ListSink) else None
        if collector is not None and not resume:
            ListSink.clear(collector)
        apply_projection(plan)
        runner = Runner(plan, observers=[], resume=resume)
        result = anyio.run(runner.run, False, backend="asyncio")
        return RunOutcome(
            status=result.status,
            summary=result.summary,
            records=ListSink.collected(collector) if collector is not None else [],
            dead=_read_dead(runner.dead_letters.path),
            error=(result.error.one_line() if result.error is not None
                   else result.summary.get("reason")),  # failed by max_failures
        )
