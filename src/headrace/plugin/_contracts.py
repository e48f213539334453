"""The contracts every source, step and sink implements, built-in or third-party.

Lifecycle: the engine constructs a plugin with its validated options and a context, then
``async with plugin:`` opens it (sinks open before the source starts; the source closes first).
``close`` always runs, also after a failure or cancellation, within ``CLOSE_TIMEOUT``; an error
in it fails a run that was otherwise fine, and is reported (never raised) when the run already
failed, so it never masks the first error.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import anyio
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from headrace.errors import HeadraceError, PluginFailed

from ._batch import Batch, DeadRecord, Position
from ._context import PluginContext

Executor = Literal["async", "thread", "process"]
CLOSE_TIMEOUT = 30.0  # seconds a plugin's close() may take once the run is over


class Options(BaseModel):
    """Base class of plugin options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: Names of ``Plugin`` that subclasses may not define (checked when the class is created).
RESERVED_NAMES = ("_close", "_close_after", "failures")


class Plugin(ABC):
    """Common base: options, context and an async-context-manager lifecycle."""

    kind: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    summary: ClassVar[str] = ""
    #: Whether the plugin applies ``timeout``/``retry``/``breaker``/``rate_limit`` itself
    #: (through ``context.policy``); steps always get them, sources and sinks only if true.
    applies_policy: ClassVar[bool] = False
    transient_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Example options for ``plugins show`` and the conformance suite (``headrace.testing``).
    example: ClassVar[dict[str, Any] | None] = None
    #: Whether one instance may be called from several threads at once (``process`` of a
    #: step with ``concurrency > 1`` on the thread executor); the engine relies on it.
    thread_safe: ClassVar[bool] = True

    #: Set by the registry: the distribution and version the class came from ("" when it
    #: was named by import path). Error messages name it.
    origin: ClassVar[str] = ""

    def __init__(self, options: Any, context: PluginContext) -> None:
        self.options = options
        self.context = context

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A plugin may not define the names the base class runs its lifecycle with: a
        method of its own called ``_close`` would silently replace the engine's."""
        super().__init_subclass__(**kwargs)
        clash = sorted(name for name in RESERVED_NAMES if name in vars(cls))
        if clash:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} defines {clash[0]!r}, a name headrace's "
                f"Plugin base class uses for the plugin's lifecycle: rename it (reserved: "
                f"{', '.join(RESERVED_NAMES)})")

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (files, connections)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; called also after failure and cancellation."""

    @property
    def label(self) -> str:
        """``sink 'out' (headrace-example 0.1)``: how messages name this plugin."""
        origin = f" ({self.origin})" if self.origin else ""
        return f"{self.kind} '{self.context.plugin_id}'{origin}"

    @contextlib.contextmanager
    def failures(self, phase: str) -> Iterator[None]:
        """An unexpected exception of this plugin becomes ``PluginFailed`` naming the plugin
        and ``phase``; headrace's own errors and cancellation pass through unchanged."""
        try:
            yield
        except HeadraceError:
            raise
        except Exception as exc:
            raise PluginFailed(f"{self.label} failed in {phase}: {type(exc).__name__}: "
                               f"{exc}") from exc

    async def __aenter__(self) -> Plugin:
        try:
            with self.failures("open"):
                await self.open()
        except BaseException as exc:
            await self._close_after(exc)  # a half-opened plugin holds resources too
            raise
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None,
                        tb: object) -> None:
        if exc is None:
            await self._close()
        else:
            await self._close_after(exc)

    async def _close(self) -> None:
        # Close runs even when the run is being cancelled (shielded), but not forever.
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope, self.failures("close"):
            await self.close()
        if scope.cancelled_caught:
            raise PluginFailed(f"{self.label} did not close within {CLOSE_TIMEOUT:.0f} s")

    async def _close_after(self, original: BaseException) -> None:
        """Close after ``original`` was raised: a teardown error is reported, not raised."""
        try:
            await self._close()
        except Exception as exc:
            message = exc.message if isinstance(exc, HeadraceError) else repr(exc)
            self.context.services.teardown_errors.append(message)
            while isinstance(original, BaseExceptionGroup) and original.exceptions:
                original = original.exceptions[0]  # the error the run reports
            self.context.logger.error("%s (while handling %s: %s)", message,
                                      type(original).__name__, original)


class Source(Plugin):
    """Produces batches; each carries its source position and records it could not decode."""

    kind = "source"
    #: Whether ``resume`` can start reading after a committed batch.
    resumable: ClassVar[bool] = False

    def fingerprint(self) -> dict[str, Any] | None:
        """What identifies the input (path, size, mtime): a resume refuses a changed input."""
        return None

    def resume_token(self, position: Position) -> dict[str, Any]:
        """What ``resume`` needs to continue right after the batch at ``position``."""
        return {"offset": position.end, "row": position.next_row}

    async def resume(self, token: dict[str, Any]) -> None:
        """Called after ``open``, before ``batches``: skip what a previous run committed."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume")

    @abstractmethod
    def batches(self) -> AsyncIterator[Batch]:
        """Yield batches until the input ends."""

    def total_size(self) -> int | None:
        """Input size in the unit of ``progress()``, for an ETA; None when unknown."""
        return None

    def progress(self) -> int:
        """How far the source has read, in the unit of ``total_size()``."""
        return 0

    def peek_schema(self) -> pa.Schema | None:
        """The schema of the first records, cheaply, for ``validate``; None when unknown."""
        return None

    def project(self, columns: list[str]) -> bool:
        """Read only ``columns`` (the pipeline never uses the others); False if unsupported."""
        return False


@dataclass
class StepOutput:
    """What a step made of one batch: the records kept, and those that failed."""

    batch: Batch
    filtered: int = 0
    dead: list[DeadRecord] = field(default_factory=list)
    #: Regrouping steps only: further output batches, in order, after ``batch``.
    more: list[Batch] = field(default_factory=list)
    #: Regrouping steps only: whether every record of the input so far (this batch
    #: included) is now in an output emitted, filtered or dead -- the outputs end at this
    #: input batch's boundary. False while the step holds records back (an aggregate until
    #: ``flush``, a rebatch short of its size). The engine moves the source position (and so
    #: checkpoints) on only with released input.
    released: bool = True


class DataError(Exception):
    """Raised by a step when a batch holds records it cannot process.

    The engine then splits the batch to find the records at fault and dead-letters only those.
    """


def cancellation_point() -> None:
    """Raise if the run was cancelled; cheap. Long loops in ``Step.process`` call it now and
    then, so a second Ctrl-C does not wait for a whole batch to finish in a worker thread."""
    import anyio.from_thread

    # Outside an engine worker thread (inline, or in a worker process) there is nothing to check.
    with contextlib.suppress(RuntimeError):
        anyio.from_thread.check_cancelled()


class Step(Plugin):
    """Transforms batches. Implement ``process`` (sync) or ``process_async``."""

    kind = "step"
    #: "arrow" or "rows": what the step wants; the engine converts lazily.
    batch_format: Literal["arrow", "rows"] = "arrow"
    default_executor: Executor = "thread"
    supported_executors: frozenset[str] = frozenset({"async", "thread"})
    #: Whether a failing batch may be split and re-run to isolate bad records.
    splittable: ClassVar[bool] = True
    #: True when the step applies ``context.policy`` itself, per record; the engine then does
    #: not wrap whole-batch calls in it.
    applies_policy_per_record: bool = False
    #: The step holds records across batches and emits them later (aggregate, rebatch): the
    #: engine runs it one batch at a time, reads ``StepOutput.released``/``more``, calls
    #: ``flush`` after the last batch, and never splits its batches to isolate bad records.
    regroups: ClassVar[bool] = False
    #: The step learns from the records it sees (dedupe's seen keys) and keeps that in
    #: ``context.state_dir``: on ``--resume`` the engine calls ``resume_state``.
    stateful: ClassVar[bool] = False

    async def flush(self) -> StepOutput | None:
        """After the last batch: what a regrouping step still holds (an aggregate's groups).
        Runs on the event loop: hand heavy work to ``anyio.to_thread.run_sync``."""
        return None

    async def resume_state(self, records: int) -> None:
        """The run resumes after the first ``records`` source records: forget what was learnt
        from later ones (each batch's ``records_before`` says where it starts)."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume its state")

    def process(self, batch: Batch) -> StepOutput:
        """Process one batch; raise ``DataError`` when records in it cannot be processed."""
        raise NotImplementedError(f"{type(self).__name__} implements neither process variant")

    async def process_async(self, batch: Batch) -> StepOutput:
        return self.process(batch)

    @property
    def is_async(self) -> bool:
        return type(self).process_async is not Step.process_async

    def output_schema(self, schema: pa.Schema) -> pa.Schema | None:
        """The schema this step produces from ``schema`` (checks expressions); None if unknown."""
        return None

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        """Which input columns this step reads, given the columns needed after it.

        ``None`` means all. The default is all: only steps that know better narrow it, and the
        engine then lets the source skip columns nobody reads.
        """
        return None


class Sink(Plugin):
    """Writes batches; output appears under its final name only when ``finish`` succeeds.

    A resumable sink commits durably in ``checkpoint`` and returns the state ``resume`` needs
    to restore exactly that output in a later run (dropping anything written after it).
    ``state["publishing"]`` is true when that run was killed during ``finish``: the output
    may already be (partly) under its final name, and ``finish`` completes what is left.
    """

    kind = "sink"
    resumable: bool = False
    #: Writing the same records again (a replay after a crash) leaves no duplicates: the
    #: sink keys its output (upsert, idempotency keys) or truncates to its checkpoint.
    idempotent: ClassVar[bool] = False
    #: Output appears under its final name only when ``finish`` succeeds (temp + rename,
    #: one transaction): a failed run leaves no partial output behind.
    atomic: ClassVar[bool] = False
    #: Set by the engine before ``open`` when the run keeps checkpoints.
    checkpointing: bool = False
    #: Set by the engine before ``open``: what identifies the input (the source's
    #: fingerprint as text; "" when it has none). The same in a resumed run, different for
    #: other input: idempotency keys derived from it and record ids are stable across
    #: replays and fresh for new data.
    input_identity: str = ""

    async def checkpoint(self) -> dict[str, Any]:
        """Make everything written so far durable; return the state to resume from."""
        raise NotImplementedError(f"{type(self).__name__} cannot checkpoint")

    async def resume(self, state: dict[str, Any]) -> None:
        """Called after ``open``, before any ``write``: continue from a checkpoint's state."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume")

    async def commit(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """Make everything written so far durable; return the state to resume from.

        ``checkpoint`` is the engine's (source token, dead-letter state, record count). A
        transactional sink (a database) stores it in the same transaction as the rows and
        gives it back from ``stored_checkpoint``: a crash between its commit and the engine's
        own ledger then neither loses nor repeats a row. The default calls ``checkpoint()``.
        """
        return await self.checkpoint()

    async def stored_checkpoint(self) -> dict[str, Any] | None:
        """On ``--resume``, after ``open``: the last ``checkpoint`` given to ``commit`` that
        this sink stored, with the state ``commit`` returned under ``"sink"``; None when the
        sink stores none. The engine resumes from it when it is newer than its own ledger."""
        return None

    @abstractmethod
    async def write(self, batch: Batch) -> list[DeadRecord] | None:
        """Write one batch. Records refused for a reason of their own (an HTTP 4xx for that
        record) come back as dead letters; a failure of the sink itself raises."""

    async def finish(self) -> None:
        """Make the output final (flush, fsync, rename)."""

    async def abort(self) -> None:
        """Discard partial output; the final name is left untouched."""

    def describe(self) -> str:
        return self.context.plugin_id
