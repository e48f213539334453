"""The steps that keep state across batches: ``dedupe`` (stateful: the keys it has seen,
kept for ``--resume``), ``aggregate`` and ``rebatch`` (regrouping: they hold records and
emit them later). ``headrace.builtins.stateful`` is what their entry points load.

Layer: imports ``headrace.plugin``, ``headrace.config`` and ``headrace.errors`` only.
"""

from ._aggregate import AggregateStep
from ._dedupe import DedupeStep
from ._rebatch import RebatchStep

__all__ = ["AggregateStep", "DedupeStep", "RebatchStep"]
