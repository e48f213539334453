"""Projection pushdown: when every step says which columns it reads, the source skips the
rest (CSV does not convert them, Parquet does not read them)."""

from __future__ import annotations

import pyarrow as pa

from ._plan import Plan


def needed_source_columns(plan: Plan, schema: pa.Schema | None) -> list[str] | None:
    """The source columns the pipeline reads, in source order; None for all (or unknown)."""
    if schema is None:
        return None
    available: list[list[str]] = []
    current: pa.Schema | None = schema
    for planned in plan.steps:
        if current is None:
            return None
        available.append(list(current.names))
        current = planned.step.output_schema(current)
    needed: frozenset[str] | None = None  # the sink writes whatever reaches it
    for planned, names in zip(reversed(plan.steps), reversed(available), strict=True):
        needed = planned.step.input_columns(needed, names)
        if needed is None:
            return None
    if needed is None or set(schema.names) <= needed:
        return None
    return [name for name in schema.names if name in needed]


def apply_projection(plan: Plan) -> list[str] | None:
    """Ask the source to read only the needed columns; returns them if it agreed."""
    columns = needed_source_columns(plan, plan.source.peek_schema())
    if columns is not None and plan.source.project(columns):
        return columns
    return None
