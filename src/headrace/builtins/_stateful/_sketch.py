"""Side tables of ``aggregate``: rows ``(group keys..., b, n)`` that Arrow's group-by builds
and merges vectorised (``n`` summed per ``(group, b)``), each group with one ``SENTINEL``
row first, so the sorted rows line up with the sorted groups. Two kinds:

**Exact float sums.** A double is ``M 2^E`` with an integer ``M < 2^53``; its bits are cut
at fixed 32-bit boundaries ("limbs", ``b``) into three integer chunks, and the chunks are
summed per limb in int64 -- exact, so the sum does not depend on the order of the values
or on how batches and partials were cut (exact up to 2^31 values a group). The final double
is the sum of the limbs in a fixed order.

**A mergeable quantile sketch with relative accuracy (DDSketch's log buckets), kept as
rows ``(group keys..., bucket, n)`` so Arrow's group-by builds and merges it vectorised.

A value x > 0 falls in bucket ``k = ceil(log_g(x))`` with ``g = (1 + a) / (1 - a)``, i.e.
``g^(k-1) < x <= g^k``, and stands for ``2 g^k / (g + 1)``, which is within a relative ``a``
of every value in the bucket. Negative values mirror that, zero has a bucket of its own.
So the sketch's q-quantile is within ``a`` (relative) of the exact lower q-quantile (the
value of rank ``floor(q (n - 1))``), whatever the data and however partials were merged.
Nulls, NaN and infinities are left out. A group holds at most a few thousand buckets
(values from 1e-9 to 1e9 need 2,100 at a = 0.01).
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


_BIAS = 1152  # bit positions of doubles (2^-1074 and up) shifted to >= 0; 36 limbs of 32
_LOW32 = np.uint64(0xFFFFFFFF)


def fsum_chunks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For finite ``values``: (value index, limb, signed chunk) rows whose chunks, summed
    per limb, are the exact sum. Zero chunks are left out."""
    fraction, exponent = np.frexp(values)
    mantissa = np.abs(fraction * 2.0**53).astype(np.uint64)  # exact: 53 bits
    position = exponent.astype(np.int64) - 53 + _BIAS
    limb, shift = position // 32, (position % 32).astype(np.uint64)
    low = (mantissa & _LOW32) << shift
    high = ((mantissa >> np.uint64(32)) << shift) + (low >> np.uint64(32))
    chunks = np.stack([low & _LOW32, high & _LOW32, high >> np.uint64(32)]).astype(np.int64)
    chunks *= np.where(values < 0, -1, 1)[None, :]
    limbs = np.stack([limb, limb + 1, limb + 2])
    index = np.broadcast_to(np.arange(len(values)), chunks.shape)
    keep = chunks != 0
    return index[keep], limbs[keep], chunks[keep]


def fsum_values(limbs: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Per group, from rows sorted by (group, limb) with a SENTINEL row first in each
    group: the float sums (0.0 for a group without values)."""
    sentinel = limbs == SENTINEL
    exponent = np.where(sentinel, 0, limbs * 32 - _BIAS).astype(np.int32)
    parts = np.ldexp(np.where(sentinel, 0, sums).astype(np.float64), exponent)
    return np.add.reduceat(parts, np.flatnonzero(sentinel))
