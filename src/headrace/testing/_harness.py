"""What every conformance check shares: the plugin under test, bounded calls, sample batches."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from headrace.plugin import Batch, Plugin, PluginContext, Position, RunServices, Source

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0  # seconds any one call of the plugin may take
NEEDS_OPTIONS = "declare `example` options (or pass options=)"

#: Input for steps and sinks when the caller gives none: ints, floats, strings and nulls.
SAMPLE_RECORDS: list[dict[str, Any]] = [
    {"id": 1, "name": "ada", "score": 1.5, "active": True},
    {"id": 2, "name": "grace", "score": None, "active": False},
    {"id": 3, "name": None, "score": -0.25, "active": True},
    {"id": 4, "name": "édith", "score": 1e9, "active": None},
    {"id": 5, "name": "", "score": 0.0, "active": False},
    {"id": 6, "name": "katherine", "score": 3.0, "active": True},
    {"id": 7, "name": "mary", "score": None, "active": None},
]


class CheckFailed(Exception):
    """The plugin does not do what the check expects; the message says what it did."""


class CheckSkipped(Exception):
    """The check cannot run for this plugin; the message says why."""


@dataclass
class Subject:
    """The plugin under test and what the checks may use."""

    kind: str
    cls: type[Plugin]
    label: str
    options: dict[str, Any] | None  # None: no example and nothing given
    records: list[dict[str, Any]]
    read_output: Callable[[dict[str, Any]], list[dict[str, Any]]] | None
    base_dir: Path
    timeout: float


def canonical(record: Any) -> str:
    """A record as comparable text (NaN, dates and the like included)."""
    return json.dumps(record, sort_keys=True, default=str)


def sample_batches(records: list[dict[str, Any]], parts: int = 3) -> list[Batch]:
    """``records`` cut into up to ``parts`` batches of one schema, with row ids and positions
    (fresh objects at each call: plugins may cache conversions in a batch)."""
    table = pa.Table.from_pylist(records)
    count = len(records)
    parts = max(1, min(parts, count))
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return [
        Batch.from_arrow(table.slice(lo, hi - lo), row_ids=np.arange(lo, hi),
                         position=Position("conformance", lo, hi, unit="row", next_row=hi))
        for lo, hi in itertools.pairwise(bounds)
    ]


def tasks() -> set[asyncio.Task[Any]]:
    return set(asyncio.all_tasks())


class Trial:
    """One check's run: builds instances of the plugin and calls them, each call bounded by
    the subject's timeout, each failure turned into ``CheckFailed`` saying what was done."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.services = RunServices()
        self.calls: list[str] = []
        self._count = 0

    def new(self) -> Plugin:
        subject = self.subject
        if subject.options is None:
            raise CheckSkipped(NEEDS_OPTIONS)
        try:
            options = subject.cls.Options.model_validate(subject.options)
        except ValidationError as exc:
            raise CheckSkipped(f"the options do not validate: {_first_line(exc)}") from None
        self._count += 1
        context = PluginContext(plugin_id=f"{subject.kind}-{self._count}",
                                base_dir=subject.base_dir, pipeline_name="conformance",
                                services=self.services)
        try:
            return subject.cls(options, context)
        except Exception as exc:
            raise CheckFailed(f"constructing it raised {describe(exc)}") from exc

    async def call(self, doing: str, fn: Callable[..., Awaitable[T]], *args: Any,
                   shield: bool = False) -> T:
        """``await fn(*args)``, bounded; a timeout or an exception fails the check."""
        timeout = self.subject.timeout
        with anyio.move_on_after(timeout, shield=shield):
            try:
                return await fn(*args)
            except (CheckFailed, CheckSkipped, StopAsyncIteration):
                raise
            except Exception as exc:
                raise CheckFailed(f"{doing} raised {describe(exc)}") from exc
        raise CheckFailed(f"{doing} did not return within {timeout:g} s")

    @asynccontextmanager
    async def opened(self, plugin: Plugin) -> AsyncIterator[Plugin]:
        """``async with plugin``, as the engine does, with ``open`` and ``close`` watched:
        ``close`` must be called when the block ends, and return within the timeout."""
        calls: list[str] = []
        failed: list[CheckFailed] = []  # close()'s own failure, however the base class reports it
        open_, close = plugin.open, plugin.close

        async def watched_open() -> None:
            calls.append("open")
            await self.call("open()", open_)

        async def watched_close() -> None:
            calls.append("close")
            try:
                await self.call("close()", close, shield=True)
            except CheckFailed as exc:
                failed.append(exc)
                raise

        plugin.open = watched_open  # type: ignore[method-assign]
        plugin.close = watched_close  # type: ignore[method-assign]
        try:
            async with plugin:
                yield plugin
        except Exception as exc:
            raise (failed[0] if failed else unwrap(exc)) from None
        if failed:
            raise failed[0]
        if calls[-1:] != ["close"]:
            raise CheckFailed(f"close() was not called when `async with` ended (calls: "
                              f"{', '.join(calls) or 'none'})")

    async def read_all(self, source: Source) -> list[Batch]:
        """Every batch of ``source``, each one's wait bounded."""
        found: list[Batch] = []
        iterator = source.batches()
        try:
            while True:
                try:
                    batch = await self.call(f"reading batch {len(found) + 1}",
                                            iterator.__anext__)
                except StopAsyncIteration:
                    return found
                if not isinstance(batch, Batch):
                    raise CheckFailed(f"batches() yielded a {type(batch).__name__}, not a Batch")
                found.append(batch)
        finally:
            await self.call("closing the batches() iterator", iterator.aclose,  # type: ignore[attr-defined]
                            shield=True)

    async def finish(self) -> None:
        await self.call("closing the run services", self.services.aclose, shield=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"


def unwrap(exc: BaseException) -> BaseException:
    """The telling exception inside (nested) exception groups, or behind the plugin's
    error wrapping (``PluginFailed`` from ...): a check result first."""
    if isinstance(exc, BaseExceptionGroup):
        inner = [unwrap(e) for e in exc.exceptions]
        for kind in (CheckFailed, CheckSkipped, Exception):
            for candidate in inner:
                if isinstance(candidate, kind):
                    return candidate
        return inner[0]
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, CheckFailed | CheckSkipped):
            return cause
        cause = cause.__cause__
    return exc


def compare_streams(want: list[str], got: list[str]) -> str | None:
    """None when ``got`` equals ``want``; else what differs: records lost, repeated, moved."""
    if got == want:
        return None
    lost = Counter(want) - Counter(got)
    extra = Counter(got) - Counter(want)
    parts = [f"expected {len(want)} records, got {len(got)}"]
    if extra:
        record, times = next(iter(extra.items()))
        parts.append(f"{sum(extra.values())} repeated or unexpected (e.g. {record} "
                     f"{times} time(s) too many)")
    if lost:
        parts.append(f"{sum(lost.values())} lost (e.g. {next(iter(lost))})")
    if not lost and not extra:
        index = next(i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b)
        parts.append(f"the same records in another order (first difference at record "
                     f"{index + 1})")
    return "; ".join(parts)


async def settle(before: set[asyncio.Task[Any]], threads: set[threading.Thread]) -> str | None:
    """After close: tasks or threads the plugin started and left running, if any."""
    for _ in range(10):  # let tasks that are finishing finish
        await anyio.lowlevel.checkpoint()
    current = asyncio.current_task()
    left = [t for t in tasks() - before if t is not current and not t.done()]
    for task in left:
        task.cancel()  # do not leave them to the next check
    started = [t for t in threading.enumerate()
               if t not in threads and t.is_alive() and not t.daemon
               and not t.name.startswith(("AnyIO worker thread", "asyncio_"))]
    for thread in started:
        await anyio.to_thread.run_sync(thread.join, 1.0)
    started = [t for t in started if t.is_alive()]
    found = [f"task {getattr(t.get_coro(), '__qualname__', t.get_name())}" for t in left]
    found += [f"thread {t.name!r}" for t in started]
    if not found:
        return None
    return "still running after close(): " + ", ".join(found[:3])
