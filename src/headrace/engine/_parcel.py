"""What moves on the engine's channels: a batch and what it stands for in the source.

A plugin sees and makes ``Batch`` objects; the bookkeeping that decides checkpoints (the
source position a batch closes, how many source records it accounts for, its memory charge,
the dead letters that travel with it) lives in a ``Span`` the engine owns. A stage moves its
input's span to its output in one assignment, so nothing a plugin does to a batch (``derive``,
``slice``, a new batch) can copy, drop or double it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from headrace.plugin import Batch, DeadRecord, Position


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter on its way to the dead-letter output: the step it failed in and the
    position of the batch it was in (so it names its own place, not a later batch's)."""

    step: str
    position: Position | None
    record: DeadRecord


@dataclass(slots=True)
class Span:
    """The part of the source a parcel accounts for.

    ``position`` is where a checkpoint may resume after this parcel; None when the parcel does
    not end at an input boundary (rows a regrouping step emitted ahead of the input they
    close, or dead letters sent on ahead): no checkpoint is taken after such a parcel.
    """

    position: Position | None = None
    source_records: int = 0  # source records this parcel completes
    records_before: int = 0  # source records read before it (this run and those it resumes)
    charge: int = 0  # bytes held against runtime.memory_budget
    enter_at: int = 0  # the first step that processes it (dead-letter replay)
    letters: list[Letter] = field(default_factory=list)

    def absorb(self, later: Span) -> None:
        """Extend this span (held input) over ``later``: the next input parcel in order.

        The position becomes ``later``'s, None included: a parcel without one (rows a
        regrouping step upstream emitted ahead of the input they close) means records past
        the last position are held now, and releasing them at that position would let a
        checkpoint say the sink's output ends there when it holds more."""
        self.position = later.position
        self.source_records += later.source_records
        self.charge += later.charge


@dataclass(slots=True)
class Parcel:
    batch: Batch
    span: Span

    @property
    def aligned(self) -> bool:
        return self.span.position is not None


class EndOfInput:
    """Sent after the last parcel when the source really ended (not on a stop): regrouping
    steps flush only then, so a stopped run never emits groups built from part of its input."""

    __slots__ = ()


END = EndOfInput()
Item = Parcel | EndOfInput
