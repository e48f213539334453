"""The steps that keep state across batches, as their entry points load them: ``dedupe``,
``aggregate``, ``rebatch`` (also registered as ``batch``). See docs/stateful-steps.md."""

from ._stateful import AggregateStep, DedupeStep, RebatchStep

__all__ = ["AggregateStep", "DedupeStep", "RebatchStep"]
