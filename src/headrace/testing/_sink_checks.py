"""Conformance checks of sinks: lifecycle under cancellation, atomic, resumable, idempotent.

The output is observed through the caller's ``read_output(options)``, or else, for the
atomic checks, through the file or folder under the ``path`` option.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from headrace.plugin import Batch, Sink

from ._harness import (
    CheckFailed,
    CheckSkipped,
    Trial,
    canonical,
    describe,
    sample_batches,
    settle,
    tasks,
)

IDENTITY = '{"conformance": true}'  # the input identity the engine would pass
NO_READER = "give read_output= to read back what the sink wrote"


def _sink(trial: Trial, checkpointing: bool = False) -> Sink:
    sink = trial.new()
    assert isinstance(sink, Sink)
    sink.checkpointing = checkpointing
    sink.input_identity = IDENTITY
    return sink


def _batches(trial: Trial) -> list[Batch]:
    if not trial.subject.records:
        raise CheckSkipped("no records to write: pass records=")
    return sample_batches(trial.subject.records)


def _output_path(trial: Trial) -> Path | None:
    path = (trial.subject.options or {}).get("path")
    if not isinstance(path, str) or not path or path == "-":
        return None
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else trial.subject.base_dir / candidate


def _snapshot(path: Path) -> Any:
    if path.is_file():
        return ("file", path.read_bytes())
    if path.is_dir():
        return ("folder", sorted(str(p.relative_to(path)) for p in path.rglob("*")))
    return ("absent",)


async def observe(trial: Trial, *, need_records: bool = False) -> Any:
    """What is under the final name now: comparable, ``("absent", why)`` when unreadable."""
    subject = trial.subject
    if subject.read_output is not None:
        reader = subject.read_output
        options = dict(subject.options or {})
        try:
            records = await anyio.to_thread.run_sync(reader, options)
        except Exception as exc:
            if need_records:
                raise CheckFailed(f"read_output raised {describe(exc)}") from exc
            return ("absent", describe(exc))
        return [canonical(r) for r in records]
    path = _output_path(trial)
    if need_records or path is None:
        raise CheckSkipped(NO_READER)
    return await anyio.to_thread.run_sync(_snapshot, path)


def _shown(state: Any) -> str:
    if isinstance(state, list):
        return f"{len(state)} records"
    if state[0] == "file":
        return f"a file of {len(state[1])} bytes"
    if state[0] == "folder":
        return f"a folder of {len(state[1])} entries"
    return "no output" if len(state) == 1 else f"no output ({state[1]})"


async def _write(trial: Trial, sink: Sink, batches: list[Batch], first: int = 1,
                 what: str = "write()") -> None:
    for number, batch in enumerate(batches, first):
        refused = await trial.call(f"{what} of batch {number}", sink.write, batch)
        if refused:
            raise CheckFailed(f"{what} of batch {number} refused {len(refused)} sample "
                              f"records ({refused[0].error}: {refused[0].message}): pass "
                              "records= it accepts")


async def _complete_run(trial: Trial) -> Any:
    """Every batch written and finished: the output an uninterrupted run leaves."""
    sink = _sink(trial)
    async with trial.opened(sink):
        await _write(trial, sink, _batches(trial))
        await trial.call("finish()", sink.finish)
    return await observe(trial)


async def lifecycle(trial: Trial) -> str:
    """Write, cancel while writing on, close, abort (the engine's order): no hang, nothing
    left running, and for an atomic sink nothing under the final name changed."""
    batches = _batches(trial)
    watched = _sink(trial).atomic and (trial.subject.read_output is not None
                                       or _output_path(trial) is not None)
    before = await observe(trial) if watched else None
    running, threads = tasks(), set(threading.enumerate())
    sink = _sink(trial)
    wrote = anyio.Event()

    async def write() -> None:
        try:
            await _write(trial, sink, batches[:1])
            wrote.set()
            await _write(trial, sink, batches[1:], first=2)
            await anyio.sleep_forever()  # waiting for the next batch, as in a run
        finally:
            wrote.set()

    async with trial.opened(sink), anyio.create_task_group() as group:
        group.start_soon(write)
        await wrote.wait()
        group.cancel_scope.cancel()
    await trial.call("abort() after cancellation", sink.abort, shield=True)
    leftover = await settle(running, threads)
    if leftover:
        raise CheckFailed(leftover)
    if watched:
        after = await observe(trial)
        if after != before:
            raise CheckFailed(f"atomic, but a cancelled run changed the output: "
                              f"{_shown(before)} before, {_shown(after)} after")
        return "cancelled while writing; closed and aborted; output untouched"
    return "cancelled while writing; closed and aborted; nothing left running"


async def atomic(trial: Trial) -> str:
    """After a complete run, a second run's writes leave the output as it was until
    ``finish``, and its ``abort`` leaves it so."""
    if not _sink(trial).atomic:
        raise CheckSkipped("does not declare atomic")
    if trial.subject.read_output is None and _output_path(trial) is None:
        raise CheckSkipped(f"{NO_READER} (or a path option)")
    before = await _complete_run(trial)
    sink = _sink(trial)
    batches = _batches(trial)
    async with trial.opened(sink):
        # All but the last batch: an interrupted run, and output unlike the complete one.
        await _write(trial, sink, batches[:-1] or batches)
        during = await observe(trial)
        if during != before:
            raise CheckFailed(f"the output changed before finish(): {_shown(before)} "
                              f"before the run, {_shown(during)} after its writes")
        await trial.call("abort()", sink.abort)
    after = await observe(trial)
    if after != before:
        raise CheckFailed(f"abort() changed the output under the final name: "
                          f"{_shown(before)} before, {_shown(after)} after")
    return f"writes and abort() left the previous output ({_shown(before)}) as it was"


def _state(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CheckFailed(f"checkpoint() returned a {type(value).__name__}, not a dict")
    try:
        state: dict[str, Any] = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"checkpoint()'s state is not JSON (the ledger stores it as "
                          f"JSON): {exc}") from None
    return state


def _exactly_once(baseline: list[str], output: list[str], what: str) -> str:
    if Counter(output) == Counter(baseline):
        return f"{what}: each of the {len(baseline)} records exactly once"
    extra = Counter(output) - Counter(baseline)
    lost = Counter(baseline) - Counter(output)
    parts = [f"{what}: {len(output)} records where an uninterrupted run wrote "
             f"{len(baseline)}"]
    if extra:
        parts.append(f"{sum(extra.values())} duplicated or unexpected (e.g. {next(iter(extra))})")
    if lost:
        parts.append(f"{sum(lost.values())} lost (e.g. {next(iter(lost))})")
    raise CheckFailed("; ".join(parts))


async def resumable(trial: Trial) -> str:
    """Write, checkpoint, stop; a new instance resumes from the state and writes the rest."""
    if not _sink(trial).resumable:
        raise CheckSkipped("does not declare resumable")
    batches = _batches(trial)
    cut = max(1, len(batches) // 2)
    readable = trial.subject.read_output is not None
    baseline = await _complete_run(trial) if readable else None
    first = _sink(trial, checkpointing=True)
    async with trial.opened(first):
        await trial.call("resume({}) of a fresh run", first.resume, {})
        await _write(trial, first, batches[:cut])
        state = _state(await trial.call("checkpoint()", first.checkpoint))
        await trial.call("abort() of the interrupted run", first.abort)
    second = _sink(trial, checkpointing=True)
    async with trial.opened(second):
        await trial.call("resume(state)", second.resume, state)
        await _write(trial, second, batches[cut:], first=cut + 1)
        await trial.call("finish() of the resumed run", second.finish)
    if baseline is None:
        return f"resumed after batch {cut}; output not compared: {NO_READER}"
    return _exactly_once(baseline, await observe(trial, need_records=True),
                         f"resumed after batch {cut}")


async def idempotent(trial: Trial) -> str:
    """Records written after the last checkpoint and written again on resume (a replay)
    appear once in the output."""
    sink = _sink(trial)
    if not sink.idempotent:
        raise CheckSkipped("does not declare idempotent")
    if trial.subject.read_output is None:
        raise CheckSkipped(NO_READER)
    batches = _batches(trial)
    cut = max(1, len(batches) // 2)
    baseline = await _complete_run(trial)
    if not sink.resumable:  # keyed output: the same records twice in one run
        again = _sink(trial)
        async with trial.opened(again):
            await _write(trial, again, batches)
            await _write(trial, again, batches[cut:], first=cut + 1, what="replayed write()")
            await trial.call("finish()", again.finish)
        return _exactly_once(baseline, await observe(trial, need_records=True),
                             f"batches {cut + 1}+ written twice")
    first = _sink(trial, checkpointing=True)
    async with trial.opened(first):
        # A checkpointing run starts with resume({}); the engine restores nothing then.
        await trial.call("resume({}) of a fresh run", first.resume, {})
        await _write(trial, first, batches[:cut])
        state = _state(await trial.call("checkpoint()", first.checkpoint))
        await _write(trial, first, batches[cut:], first=cut + 1)  # not checkpointed
        await trial.call("abort() of the interrupted run", first.abort)
    second = _sink(trial, checkpointing=True)
    async with trial.opened(second):
        await trial.call("resume(state)", second.resume, state)
        await _write(trial, second, batches[cut:], first=cut + 1, what="replayed write()")
        await trial.call("finish() of the resumed run", second.finish)
    return _exactly_once(baseline, await observe(trial, need_records=True),
                         f"batches {cut + 1}+ replayed after a checkpoint at batch {cut}")
