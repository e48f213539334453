"""``aggregate``'s metrics: ``count(*)``, ``count(col)``, ``sum``, ``mean``, ``min``, ``max``
and ``approx_quantile(col, q)``, parsed once and checked against the input schema.

Each metric is computed from partial states that merge: a count, a sum, a min, a max (a
mean is a sum and a count), or a quantile sketch. Partial state columns are named ``p0``,
``p1``, ... and shared between metrics that need the same one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from headrace.errors import ExpressionError

FUNCTIONS = ("count", "sum", "mean", "min", "max", "approx_quantile")
_CALL = re.compile(
    r"""^\s*(?P<fn>[A-Za-z_]\w*)\s*\(\s*(?P<arg>\*|[A-Za-z_]\w*|"[^"]+")\s*
    (?:,\s*(?P<q>[0-9]*\.?[0-9]+)\s*)?\)\s*$""", re.VERBOSE)


@dataclass(frozen=True)
class Metric:
    name: str  # the output column
    function: str
    column: str | None  # None for count(*)
    quantile: float | None = None


def parse_metric(name: str, text: str) -> Metric:
    """``"sum(amount)"`` -> Metric; ``ValueError`` with the accepted forms otherwise."""
    match = _CALL.match(text) if isinstance(text, str) else None
    forms = "count(*), count(col), sum(col), mean(col), min(col), max(col), " \
            "approx_quantile(col, 0.95)"
    if match is None:
        raise ValueError(f"{name}: {text!r} is not a metric (one of {forms})")
    function, arg, q = match["fn"].lower(), match["arg"], match["q"]
    if function not in FUNCTIONS:
        raise ValueError(f"{name}: unknown function {match['fn']!r} (one of {forms})")
    column = None if arg == "*" else arg.strip('"')
    if column is None and function != "count":
        raise ValueError(f"{name}: {function}(*) is not a metric; name a column")
    if (function == "approx_quantile") != (q is not None):
        raise ValueError(f"{name}: {text!r}: approx_quantile takes a column and a "
                         "quantile, e.g. approx_quantile(latency, 0.95); the others one column")
    quantile = float(q) if q is not None else None
    if quantile is not None and not 0 <= quantile <= 1:
        raise ValueError(f"{name}: quantile {quantile} is not between 0 and 1")
    return Metric(name, function, column, quantile)


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _orderable(kind: pa.DataType) -> bool:
    return (_numeric(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind) or pa.types.is_temporal(kind)
            or pa.types.is_decimal(kind))


def sum_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_floating(kind):
        return pa.float64()
    if pa.types.is_unsigned_integer(kind):
        return pa.uint64()
    return pa.int64()  # signed integers and booleans (true counts 1)


def output_type(metric: Metric, schema: pa.Schema) -> pa.DataType:
    """The metric's output type; ``ExpressionError`` if its column is missing or unfit."""
    if metric.column is None:
        return pa.int64()
    if metric.column not in schema.names:
        raise ExpressionError(f"metric {metric.name}: unknown column {metric.column!r} "
                              f"(columns: {', '.join(schema.names)})")
    kind = schema.field(metric.column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if metric.function == "count":
        return pa.int64()
    if metric.function in ("min", "max"):
        if not _orderable(kind):
            raise ExpressionError(f"metric {metric.name}: {metric.function} of column "
                                  f"{metric.column!r} ({kind}): not an orderable value")
        return kind
    if not _numeric(kind):
        raise ExpressionError(f"metric {metric.name}: {metric.function} of column "
                              f"{metric.column!r} ({kind}): not a number (cast it first)")
    return sum_type(kind) if metric.function == "sum" else pa.float64()


@dataclass(frozen=True)
class Partial:
    """One partial state: ``function`` over ``column`` (cast to ``cast``), merged with
    ``merge``. ``fsum`` is an exact float sum, kept in a side table (see ``_sketch``)."""

    column: str | None
    function: str  # count_all, count, sum, min, max (Arrow's hash aggregates) or fsum
    cast: pa.DataType | None
    merge: str  # sum, min, max; "" for fsum


def partials_of(metric: Metric, schema: pa.Schema) -> list[Partial]:
    """The partial states a metric is computed from (none for approx_quantile). Float sums
    are exact (``fsum``), so no result depends on how the input was cut into batches."""
    fn, col = metric.function, metric.column
    if col is None:
        return [Partial(None, "count_all", None, "sum")]
    kind = schema.field(col).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    count = Partial(col, "count", None, "sum")
    if fn == "count":
        return [count]
    if fn in ("sum", "mean"):
        if pa.types.is_floating(kind):
            return [count, Partial(col, "fsum", pa.float64(), "")]
        return [count, Partial(col, "sum", sum_type(kind), "sum")]
    if fn in ("min", "max"):
        return [Partial(col, fn, kind, fn)]
    return []
