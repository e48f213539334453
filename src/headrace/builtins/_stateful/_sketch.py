"""A mergeable quantile sketch with relative accuracy (DDSketch's log buckets), kept as
rows ``(group keys..., bucket, n)`` so Arrow's group-by builds and merges it vectorised.

A value x > 0 falls in bucket ``k = ceil(log_g(x))`` with ``g = (1 + a) / (1 - a)``, i.e.
``g^(k-1) < x <= g^k``, and stands for ``2 g^k / (g + 1)``, which is within a relative ``a``
of every value in the bucket. Negative values mirror that, zero has a bucket of its own.
So the sketch's q-quantile is within ``a`` (relative) of the exact lower q-quantile (the
value of rank ``floor(q (n - 1))``), whatever the data and however partials were merged.
Nulls, NaN and infinities are left out. A group holds at most a few thousand buckets
(values from 1e-9 to 1e9 need 2,100 at a = 0.01), and each group also has one ``SENTINEL``
row, so sorted sketch rows line up with the sorted groups.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

SENTINEL = -(1 << 62)  # smallest bucket key: the first row of every group
_OFFSET = 1 << 21  # keeps k + _OFFSET > 0 for every finite float at a >= 0.0005


def float_values(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 values and a mask of those that are finite (not null)."""
    array = column.cast(pa.float64()).combine_chunks()
    values = np.frombuffer(array.buffers()[1], dtype=np.float64)[
        array.offset: array.offset + len(array)]
    usable = np.isfinite(values)
    if array.null_count:
        bits = np.frombuffer(array.buffers()[0], dtype=np.uint8)
        valid = np.unpackbits(bits, bitorder="little")[array.offset: array.offset + len(array)]
        usable &= valid.astype(bool)
    return values, usable


def bucket_keys(values: np.ndarray, accuracy: float) -> np.ndarray:
    """Bucket keys (int64) of finite ``values``, ordered as the values are."""
    log_gamma = math.log((1 + accuracy) / (1 - accuracy))
    magnitude = np.abs(values)
    nonzero = magnitude > 0
    k = np.zeros(len(values), dtype=np.int64)
    k[nonzero] = np.ceil(np.log(magnitude[nonzero]) / log_gamma).astype(np.int64) + _OFFSET
    return np.where(values < 0, -k, k)


def bucket_values(keys: np.ndarray, accuracy: float) -> np.ndarray:
    """The value each bucket key stands for."""
    gamma = (1 + accuracy) / (1 - accuracy)
    k = np.abs(keys) - _OFFSET
    with np.errstate(over="ignore"):
        value = 2 * np.exp(k * math.log(gamma)) / (gamma + 1)
    return np.where(keys == 0, 0.0, np.where(keys < 0, -value, value))


def quantiles(buckets: np.ndarray, counts: np.ndarray, q: float,
              accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """Per group, from sketch rows sorted by (group, bucket) with a SENTINEL row first in
    each group: the q-quantile estimates and a mask of groups that had values."""
    weights = np.where(buckets == SENTINEL, 0, counts).astype(np.int64)
    cumulative = np.cumsum(weights)
    starts = np.flatnonzero(buckets == SENTINEL)
    ends = np.append(starts[1:], len(buckets)) - 1
    base = cumulative[starts]  # the sentinel weighs nothing: the count before the group
    n = cumulative[ends] - base
    has = n > 0
    rank = np.floor(q * np.maximum(n - 1, 0)).astype(np.int64)
    at = np.searchsorted(cumulative, base + rank + 1, side="left")
    at = np.minimum(at, len(buckets) - 1)
    return bucket_values(buckets[at], accuracy), has
