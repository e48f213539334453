"""Conformance checks of sources: lifecycle under cancellation, batches, resuming."""

from __future__ import annotations

import json
import threading
from functools import partial
from typing import Any

import anyio

from headrace.plugin import Batch, Source

from ._harness import CheckFailed, CheckSkipped, Trial, canonical, compare_streams, settle, tasks


def _source(trial: Trial) -> Source:
    source = trial.new()
    assert isinstance(source, Source)
    return source


def _stream(batches: list[Batch]) -> list[str]:
    """What a run would see, in order: each record, and each record the source rejected."""
    items: list[str] = []
    for batch in batches:
        items.extend(canonical(row) for row in batch.to_rows())
        items.extend(f"rejected {canonical(r.record)} ({r.error})" for r in batch.rejects)
    return items


async def lifecycle(trial: Trial) -> str:
    """Open, cancel while reading the second batch, close: no hang, nothing left running."""
    before, threads = tasks(), set(threading.enumerate())
    source = _source(trial)
    first = anyio.Event()

    async def read() -> None:
        iterator = source.batches()
        try:
            await trial.call("reading batch 1", iterator.__anext__)
            first.set()
            while True:  # the engine reads on; the cancellation lands in the source's code
                await trial.call("reading on", iterator.__anext__)
        except StopAsyncIteration:
            pass
        finally:
            first.set()
            await trial.call("closing the batches() iterator after cancellation",
                             iterator.aclose, shield=True)  # type: ignore[attr-defined]

    async with trial.opened(source), anyio.create_task_group() as group:
        group.start_soon(read)
        await first.wait()  # read() sets it at the latest when it ends
        group.cancel_scope.cancel()
    leftover = await settle(before, threads)
    if leftover:
        raise CheckFailed(leftover)
    return "cancelled while reading; closed; nothing left running"


async def batches(trial: Trial) -> str:
    """Batches hold what they say; positions only move forward."""
    source = _source(trial)
    async with trial.opened(source):
        peeked = await trial.call("peek_schema()", partial(anyio.to_thread.run_sync,
                                                           source.peek_schema))
        found = await trial.read_all(source)
    problems: list[str] = []
    if peeked is not None and found and found[0].num_rows:
        names = found[0].to_arrow().schema.names
        if peeked.names != names:
            problems.append(f"peek_schema() names the columns {peeked.names}, the first batch "
                            f"has {names}")
    previous = None
    for number, batch in enumerate(found, 1):
        rows = len(batch.to_rows())
        if rows != batch.num_rows:
            problems.append(f"batch {number}: num_rows {batch.num_rows} but {rows} records")
        if batch.row_ids is not None and len(batch.row_ids) != batch.num_rows:
            problems.append(f"batch {number}: {len(batch.row_ids)} row ids for "
                            f"{batch.num_rows} records")
        position = batch.position
        if position is None:
            if source.resumable:
                problems.append(f"batch {number} has no position: a resumable source needs "
                                "one to checkpoint after it")
            continue
        if position.end < position.start:
            problems.append(f"batch {number}: position ends ({position.end}) before it "
                            f"starts ({position.start})")
        if previous is not None and (position.start < previous.end
                                     or position.end <= previous.end):
            problems.append(f"batch {number}: position {position.start}-{position.end} does "
                            f"not follow {previous.start}-{previous.end}")
        if (previous is not None and position.next_row is not None
                and previous.next_row is not None and position.next_row < previous.next_row):
            problems.append(f"batch {number}: next_row goes back ({previous.next_row} -> "
                            f"{position.next_row})")
        if (batch.row_ids is not None and len(batch.row_ids) and position.next_row is not None
                and int(batch.row_ids.max()) >= position.next_row):
            problems.append(f"batch {number}: a row id ({int(batch.row_ids.max())}) is not "
                            f"below next_row ({position.next_row})")
        previous = position
    if problems:
        raise CheckFailed("; ".join(problems[:3]))
    records = sum(b.num_rows for b in found)
    rejected = sum(len(b.rejects) for b in found)
    if not found:
        return "no batches: give input with records for a stronger check"
    return f"{len(found)} batches, {records} records, {rejected} rejected"


def _json_round_trip(what: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{what} is not JSON (the ledger stores it as JSON): {exc}") from None


async def resumable(trial: Trial) -> str:
    """Resumed after batch k, a new instance yields exactly the records after batch k."""
    source = _source(trial)
    if not source.resumable:
        raise CheckSkipped("does not declare resumable")
    fingerprint = _json_round_trip("fingerprint()", source.fingerprint())
    if _json_round_trip("fingerprint()", source.fingerprint()) != fingerprint:
        raise CheckFailed("fingerprint() changes between calls on the same input: a resume "
                          "would refuse it as changed")
    async with trial.opened(source):
        found = await trial.read_all(source)
        # Asked at the end, as the engine may ask after reading ahead: the token must
        # depend on the position it is given, not on how far the source has read.
        tokens = []
        for number, batch in enumerate(found, 1):
            if batch.position is None:
                raise CheckFailed(f"batch {number} has no position to resume after")
            tokens.append(_json_round_trip(f"resume_token() after batch {number}",
                                           source.resume_token(batch.position)))
    if not found:
        raise CheckSkipped("the input gave no batches to resume after")
    cuts = sorted({0, len(found) // 2, len(found) - 1})
    for cut in cuts:
        again = _source(trial)
        async with trial.opened(again):
            await trial.call(f"resume() after batch {cut + 1}", again.resume, tokens[cut])
            rest = await trial.read_all(again)
        difference = compare_streams(_stream(found[cut + 1:]), _stream(rest))
        if difference:
            raise CheckFailed(f"resumed after batch {cut + 1} of {len(found)} "
                              f"(token {tokens[cut]}): {difference}")
    notes = [f"resumed after batches {', '.join(str(c + 1) for c in cuts)} of {len(found)}"]
    if len(found) < 3:
        notes.append("give input of 3+ batches for a stronger check")
    if fingerprint is None:
        notes.append("fingerprint() is None: the engine will not checkpoint its runs")
    return "; ".join(notes)
