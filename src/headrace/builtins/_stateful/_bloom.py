"""A Bloom filter for ``dedupe``'s probabilistic mode, rebuilt exactly on ``--resume``.

``m = -n ln p / (ln 2)^2`` bits and ``k = (m / n) ln 2`` hash functions for ``capacity`` n
and ``false_positive_rate`` p; the k positions come from a key's 128-bit fingerprint by
double hashing (``h1 + i h2 mod m``). A filter cannot forget, so the keys it was given are
also appended to a log in ``state_dir`` (24 bytes a key: the source record its batch starts
at, and the fingerprint; fsynced each batch). On resume the log is cut at the first key
first seen at or after the resume point and the filter is rebuilt from the rest: setting
bits is order-free, so the filter is bit for bit the one the interrupted run had there, and
the resumed run drops exactly the records an uninterrupted run would.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ._keys import FINGERPRINT

_LOG = np.dtype([("first_at", "<i8"), ("key", FINGERPRINT)])
_READ = 1 << 20  # log records read at a time when rebuilding


def bloom_size(capacity: int, false_positive_rate: float) -> tuple[int, int]:
    """Bits and hash functions for ``capacity`` keys at ``false_positive_rate``."""
    bits = math.ceil(-capacity * math.log(false_positive_rate) / math.log(2) ** 2)
    bits = max(64, (bits + 63) // 64 * 64)
    hashes = max(1, round(bits / capacity * math.log(2)))
    return bits, hashes


class BloomSeen:
    def __init__(self, path: Path, capacity: int, false_positive_rate: float) -> None:
        self.path = path
        self.capacity = capacity
        self.m, self.k = bloom_size(capacity, false_positive_rate)
        self.bits = np.zeros(self.m // 8, dtype=np.uint8)
        self.count = 0
        self.log = open(path, "ab")  # noqa: SIM115 - closed in close()

    @property
    def spilled(self) -> bool:
        return False

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        halves = np.ascontiguousarray(keys).view(np.uint64).reshape(-1, 2)
        h1, h2 = halves[:, 0], halves[:, 1] | np.uint64(1)
        steps = np.arange(self.k, dtype=np.uint64)
        return (h1[:, None] + steps[None, :] * h2[:, None]) % np.uint64(self.m)

    def _set(self, keys: np.ndarray) -> None:
        where = self._positions(keys).ravel()
        np.bitwise_or.at(self.bits, (where >> np.uint64(3)).astype(np.intp),
                         (np.uint8(1) << (where & np.uint64(7)).astype(np.uint8)))

    def contains(self, keys: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        """Which of ``keys`` the filter says it has seen (false positives possible), as if
        they were looked up and added one at a time in ``order`` (their first occurrences):
        a key also counts as seen when keys before it in this call set all its bits. So
        the answers do not depend on where batches begin and end."""
        if not len(keys):
            return np.zeros(0, dtype=bool)
        where = self._positions(keys)
        hit = ((self.bits[(where >> np.uint64(3)).astype(np.intp)]
                >> (where & np.uint64(7)).astype(np.uint8)) & np.uint8(1)).astype(bool)
        seen: np.ndarray = np.asarray(hit.all(axis=1))
        if order is None:
            return seen
        fresh = np.flatnonzero(~seen)
        if len(fresh) < 2:
            return seen
        # A fresh key whose unset bits another fresh key also sets may be seen after all,
        # depending on the order: those few (suspects) are decided one by one.
        bits = where[fresh]
        unique, counts = np.unique(bits, return_counts=True)
        shared = counts[np.searchsorted(unique, bits)] >= 2
        suspects = fresh[(shared | hit[fresh]).all(axis=1)]
        if not len(suspects):
            return seen
        sure = np.setdiff1d(fresh, suspects)
        first_set: dict[int, int] = {}  # bit -> the earliest fresh key that sets it
        for key in sure[np.argsort(order[sure])]:
            for bit in where[key].tolist():
                first_set.setdefault(bit, int(order[key]))
        for key in suspects[np.argsort(order[suspects])]:
            at = int(order[key])
            unset = [int(b) for b, h in zip(where[key], hit[key], strict=True) if not h]
            if all(first_set.get(b, at) < at for b in unset):
                seen[key] = True  # all its bits were set by keys before it
            else:
                for bit in where[key].tolist():
                    first_set[bit] = min(first_set.get(bit, at), at)
        return seen

    def add(self, keys: np.ndarray, first_at: int) -> None:
        if not len(keys):
            return
        records = np.empty(len(keys), _LOG)
        records["first_at"] = first_at
        records["key"] = keys
        self.log.write(records.tobytes())
        self.log.flush()
        os.fsync(self.log.fileno())
        self._set(keys)
        self.count += len(keys)

    def forget_from(self, records: int) -> None:
        """Keep the log up to the keys first seen before ``records``; rebuild the filter."""
        self.bits[:] = 0
        self.count = 0
        keep = 0
        with open(self.path, "rb") as log:
            while chunk := log.read(_READ * _LOG.itemsize):
                entries = np.frombuffer(chunk[: len(chunk) // _LOG.itemsize * _LOG.itemsize],
                                        _LOG)  # a torn last entry is dropped
                before = int(np.searchsorted(entries["first_at"], records))
                self._set(entries["key"][:before])
                keep += before
                if before < len(entries):
                    break
        self.count = keep
        self.log.truncate(keep * _LOG.itemsize)
        self.log.seek(0, os.SEEK_END)
        os.fsync(self.log.fileno())

    def close(self) -> None:
        self.log.close()
