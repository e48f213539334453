"""``headrace dlq replay``: dead-lettered records re-enter the pipeline at the step where they
failed, with the pipeline's current configuration (a fixed function, a raised timeout)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from headrace.errors import ConfigValueError
from headrace.plugin import Batch, Options, PluginContext, Position, Source

from ._plan import Plan

REPLAY_BATCH = 10_000


@dataclass
class ReplayPlan:
    plan: Plan
    replayable: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count


@dataclass
class _Letter:
    record: dict[str, Any]
    enter_at: int
    row_id: int | None
    file_line: int


class DeadLetterSource(Source):
    """Dead letters as batches, one run of consecutive letters of the same step per batch."""

    def __init__(self, path: Path, letters: list[_Letter], context: PluginContext) -> None:
        super().__init__(Options(), context)
        self.path = path
        self.letters = letters
        self._done = 0

    def total_size(self) -> int | None:
        return len(self.letters)

    def progress(self) -> int:
        return self._done

    async def batches(self) -> AsyncIterator[Batch]:
        start = 0
        while start < len(self.letters):
            stop = start + 1
            step = self.letters[start].enter_at
            while (stop < len(self.letters) and stop - start < REPLAY_BATCH
                   and self.letters[stop].enter_at == step):
                stop += 1
            part = self.letters[start:stop]
            ids = [-1 if x.row_id is None else x.row_id for x in part]
            batch = Batch.from_rows(
                [x.record for x in part], row_ids=np.asarray(ids, dtype=np.int64),
                position=Position(str(self.path), part[0].file_line, part[-1].file_line,
                                  unit="line"),
            )
            batch.enter_at = step
            self._done = stop
            start = stop
            yield batch
            await anyio.lowlevel.checkpoint()


def read_letters(path: Path, step_index: dict[str, int], only_step: str | None
                 ) -> tuple[list[_Letter], dict[str, int]]:
    """The letters that can re-enter, and counts of those that cannot, by reason."""
    letters: list[_Letter] = []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
            except ValueError:
                skip("unreadable line")
                continue
            step = entry.get("step") if isinstance(entry, dict) else None
            if only_step is not None and step != only_step:
                continue
            record = entry.get("record") if isinstance(entry, dict) else None
            if step not in step_index:
                skip("failed in the source (raw input, not a record)" if isinstance(
                    record, dict) and set(record) == {"line"} else f"no step '{step}' now")
                continue
            if not isinstance(record, dict) or ("truncated" in record and "sha256" in record):
                skip("record not kept whole (too large)")
                continue
            where = entry.get("position") or {}
            row = where.get("line", where.get("row"))
            letters.append(_Letter(record, step_index[step], row if isinstance(row, int)
                                   else None, number))
    return letters, skipped


def replay_plan(plan: Plan, path: Path, only_step: str | None) -> ReplayPlan:
    """``plan`` with its source replaced by the dead letters of ``path``."""
    step_index = {p.id: i for i, p in enumerate(plan.steps)}
    if only_step is not None and only_step not in step_index:
        known = ", ".join(step_index) or "none"
        raise ConfigValueError(f"--step {only_step}: the pipeline has no such step (steps: "
                               f"{known})")
    letters, skipped = read_letters(path, step_index, only_step)
    context = PluginContext(plugin_id="dead-letters", base_dir=plan.pipeline.base_dir,
                            pipeline_name=plan.name, services=plan.services)
    source = DeadLetterSource(path, letters, context)
    return ReplayPlan(Plan(pipeline=plan.pipeline, source=source, steps=plan.steps,
                           sink=plan.sink, services=plan.services), len(letters), skipped)
