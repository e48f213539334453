"""The exact set of keys ``dedupe`` has seen, on disk and bounded in memory.

Every key is written to an SQLite table in the step's ``state_dir`` with the source record
its batch starts at, one transaction per batch (``synchronous=FULL``: a checkpoint taken
after the batch never covers keys a power cut could lose). While the keys fit in ``memory``
bytes (16 a key) the set is mirrored in memory as sorted numpy runs and answers lookups on
its own; past that the mirror is dropped ("spilled") and lookups go to the SQLite index,
whose page cache is bounded too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from ._keys import FINGERPRINT

_CHUNK = 20_000  # keys read from SQLite at a time
_LOOKUP = 500  # keys a lookup statement names: always as many, so one statement is cached


class _SortedRuns:
    """A set of fingerprints as sorted arrays whose sizes halve (a log-structured merge):
    adding a batch's keys costs their sort plus amortised merges; a lookup is one binary
    search a run."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []
        self.size = 0

    def add(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        self.runs.append(np.sort(keys))
        self.size += len(keys)
        while len(self.runs) > 1 and len(self.runs[-1]) * 2 >= len(self.runs[-2]):
            last = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate([self.runs[-1], last]))

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for run in self.runs:
            at = np.searchsorted(run, keys)
            inside = at < len(run)
            found[inside] |= run[at[inside]] == keys[inside]
        return found


class ExactSeen:
    """Keys with the source record they were first seen at; exact (up to a 128-bit
    fingerprint collision)."""

    def __init__(self, path: Path, memory: int) -> None:
        self.path = path
        self.memory = memory
        self.count = 0
        self.mirror: _SortedRuns | None = _SortedRuns()
        # Open in the event loop's thread, used from the step's worker thread, one at a time.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        cache_kib = max(2048, min(memory // 1024, 64 * 1024))
        for pragma in ("journal_mode=WAL", "synchronous=FULL", f"cache_size=-{cache_kib}"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (key BLOB PRIMARY KEY, "
                        "first_at INTEGER NOT NULL) WITHOUT ROWID")

    @property
    def spilled(self) -> bool:
        return self.mirror is None

    def forget_from(self, records: int) -> None:
        """Forget the keys first seen at or after source record ``records``; load the rest."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM seen WHERE first_at >= ?", (records,))
        self.db.execute("COMMIT")
        (self.count,) = self.db.execute("SELECT count(*) FROM seen").fetchone()
        self.mirror = _SortedRuns() if self.count * FINGERPRINT.itemsize <= self.memory else None
        if self.mirror is not None:
            cursor = self.db.execute("SELECT key FROM seen")
            while rows := cursor.fetchmany(_CHUNK):
                self.mirror.add(np.frombuffer(b"".join(r[0] for r in rows), FINGERPRINT))

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` (distinct) were seen before."""
        if self.mirror is not None:
            return self.mirror.contains(keys)
        found: set[bytes] = set()
        raw = [keys[i: i + 1].tobytes() for i in range(len(keys))]
        query = f"SELECT key FROM seen WHERE key IN ({','.join('?' * _LOOKUP)})"
        for start in range(0, len(raw), _LOOKUP):
            chunk = raw[start: start + _LOOKUP]
            chunk += chunk[-1:] * (_LOOKUP - len(chunk))  # padded with a key it names already
            found.update(r[0] for r in self.db.execute(query, chunk))
        return np.fromiter((k in found for k in raw), dtype=bool, count=len(raw))

    def add(self, keys: np.ndarray, first_at: int) -> None:
        """Remember ``keys`` (distinct, new) as first seen at ``first_at``; durable on return."""
        if not len(keys):
            return
        blob = keys.tobytes()
        size = FINGERPRINT.itemsize
        rows = ((blob[i: i + size], first_at) for i in range(0, len(blob), size))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self.count += len(keys)
        if self.mirror is not None:
            if self.count * FINGERPRINT.itemsize > self.memory:
                self.mirror = None  # from now on the SQLite index answers
            else:
                self.mirror.add(keys)

    def close(self) -> None:
        self.db.close()
