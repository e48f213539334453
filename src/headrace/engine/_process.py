"""Running a step in worker processes: batches cross as Arrow IPC, workers are spawned."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from typing import Any

import pyarrow as pa

from headrace.plugin import Batch, DataError, DeadRecord, PluginContext, Step, StepOutput


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


@lru_cache(maxsize=8)
def _worker_step(cls_path: str, options_json: str, plugin_id: str, base_dir: str,
                 policies_json: str) -> Step:
    import importlib
    from pathlib import Path

    from headrace.config import Policies

    from ._resilience import StepPolicy

    if base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    module_name, _, name = cls_path.partition(":")
    cls = getattr(importlib.import_module(module_name), name)
    options = cls.Options.model_validate_json(options_json)
    # The step's policies, rebuilt here, so per-record retries happen in the worker too.
    policy = StepPolicy(plugin_id, Policies.model_validate_json(policies_json),
                        transient=getattr(cls, "transient_errors", ()))
    return cls(options, PluginContext(plugin_id=plugin_id, base_dir=Path(base_dir),
                                      policy=policy))


def _run_in_worker(
    step_key: tuple[str, str, str, str, str], data: bytes, row_ids: Any
) -> tuple[bytes, Any, int, list[DeadRecord], str | None, int]:
    """Executed in a worker process. Returns output IPC, row ids, filtered, dead, data error,
    and the retries it made."""
    step = _worker_step(*step_key)
    policy: Any = step.context.policy
    retries_before = policy.retries
    batch = Batch.from_arrow(from_ipc(data), row_ids=row_ids)
    try:
        out = step.process(batch)
    except DataError as exc:
        return (b"", None, 0, [], f"{type(exc.__cause__ or exc).__name__}\x00{exc}",
                policy.retries - retries_before)
    return (to_ipc(out.batch.to_arrow()), out.batch.row_ids, out.filtered, out.dead, None,
            policy.retries - retries_before)


class ProcessRunner:
    """A pool of spawned workers for one step."""

    def __init__(self, step: Step, workers: int) -> None:
        cls = type(step)
        self._key = (
            f"{cls.__module__}:{cls.__qualname__}",
            step.options.model_dump_json(),
            step.context.plugin_id,
            str(step.context.base_dir),
            step.context.policy.policies.model_dump_json()  # type: ignore[attr-defined]
            if step.context.policy is not None else "{}",
        )
        self._policy: Any = step.context.policy
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    async def process(self, batch: Batch) -> StepOutput:
        future = self._pool.submit(
            _run_in_worker, self._key, to_ipc(batch.to_arrow()), batch.row_ids
        )
        data, row_ids, filtered, dead, error, retries = await asyncio.wrap_future(future)
        if retries and self._policy is not None:
            self._policy.retries += retries  # counted in the run summary like local ones
        if error is not None:
            name, _, message = error.partition("\x00")
            raise DataError(f"{message}") from _named(name)
        return StepOutput(batch=batch.derive(table=from_ipc(data), row_ids=row_ids),
                          filtered=filtered, dead=dead)

    async def shutdown(self, grace: float) -> None:
        """Let the workers end; those still busy after ``grace`` seconds (a call that never
        returns, a run cancelled mid-call) are terminated, then killed."""
        import anyio

        # The pool's own processes (CPython's private map, which shutdown clears;
        # ``terminate_workers`` is 3.14+).
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        await anyio.to_thread.run_sync(_join, processes, grace)
        for process in processes:
            if process.is_alive():
                process.terminate()
        await anyio.to_thread.run_sync(_join, processes, 2.0)
        for process in processes:
            if process.is_alive():
                process.kill()


def _join(processes: list[Any], seconds: float) -> None:
    import time

    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


def _named(name: str) -> Exception:
    """An exception whose type name is ``name``, so dead letters name the worker's error."""
    return type(name, (Exception,), {})()
