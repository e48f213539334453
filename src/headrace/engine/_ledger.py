"""The run ledger: where a pipeline's last run got to, for ``headrace run --resume``.

One SQLite file per pipeline (``<run dir>/ledger.sqlite``, WAL, ``synchronous=FULL``) with one
row: the pipeline's hash, the input's fingerprint, the status, and the last checkpoint -- the
source position after the last batch that the sink and the dead-letter output both committed,
with the state they need to continue from exactly there. A lock file keeps two runs of one
pipeline apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from headrace.errors import HeadraceError

from ._lifecycle import ResumeError, RunState, next_state

logger = logging.getLogger("headrace.engine")

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pipeline_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    checkpoint TEXT
)
"""


class RunLockedError(HeadraceError):
    """Another run of the same pipeline is going on."""


@dataclass(frozen=True)
class Checkpoint:
    source: dict[str, Any]  # the source's resume token
    sink: dict[str, Any]
    dead_letters: dict[str, Any]
    records: int  # source records committed, over this run and those it resumed
    out: int = 0  # records the sink holds at this checkpoint, over the same runs

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        return cls(**json.loads(text))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Ledger:
    """Blocking; the runner calls it from worker threads."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "ledger.sqlite"
        self._db: sqlite3.Connection | None = None
        self._lock_handle: IO[str] | None = None
        #: This run's state (``_lifecycle``); None until ``begin`` succeeded.
        self.state: RunState | None = None

    def open(self) -> None:
        private_dir(self.run_dir)
        handle = open(self.run_dir / "lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunLockedError(f"another run of this pipeline holds {self.run_dir / 'lock'}",
                                 hint="wait for it to end, or set runtime.run_dir") from None
        self._lock_handle = handle
        if not self.path.exists():  # owner-only; SQLite gives its -wal/-shm files the same
            self.path.touch(mode=0o600)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed checkpoint survives power loss
        db.execute(SCHEMA)
        self._db = db

    @property
    def opened(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_handle is not None:
            self._lock_handle.close()  # releases the flock
            self._lock_handle = None

    def _row(self) -> tuple[str, str, str, str | None] | None:
        assert self._db is not None
        return self._db.execute(
            "SELECT pipeline_hash, fingerprint, status, checkpoint FROM run WHERE id = 1"
        ).fetchone()

    def previous(self) -> str | None:
        """The last run's status (running/interrupted/failed/publishing/stopped/completed)."""
        row = self._row()
        return row[2] if row else None

    def begin(self, pipeline_hash: str, fingerprint: dict[str, Any] | None,
              resume: bool) -> Checkpoint | None:
        """Start a run; with ``resume``, return the checkpoint to continue from."""
        assert self._db is not None
        fingerprint_text = json.dumps(fingerprint, sort_keys=True)
        if resume:
            row = self._row()
            if row is None:  # e.g. killed before its first checkpoint: start from the top
                logger.warning("nothing to resume (no earlier run recorded): starting from "
                               "the beginning")
                return self.begin(pipeline_hash, fingerprint, resume=False)
            old_hash, old_fingerprint, status, checkpoint = row
            state = next_state(RunState(status), "resume")  # refused: nothing changes
            if old_hash != pipeline_hash:
                raise ResumeError("cannot resume: the pipeline changed since the interrupted "
                                  "run (file, --set values or variables)",
                                  hint="undo the change, or run without --resume to start over")
            if old_fingerprint != fingerprint_text:
                raise ResumeError("cannot resume: the input changed since the interrupted run "
                                  f"(was {old_fingerprint}, now {fingerprint_text})",
                                  hint="run without --resume to start over")
            self._set(state)
            return Checkpoint.from_json(checkpoint) if checkpoint else None
        self._db.execute(
            "INSERT OR REPLACE INTO run VALUES (1, ?, ?, ?, ?, ?, NULL)",
            (pipeline_hash, fingerprint_text, RunState.RUNNING.value, _now(), _now()),
        )
        self.state = RunState.RUNNING
        return None

    def _set(self, state: RunState) -> None:
        assert self._db is not None
        self._db.execute("UPDATE run SET status = ?, updated_at = ? WHERE id = 1",
                         (state.value, _now()))
        self.state = state

    def commit(self, checkpoint: Checkpoint) -> None:
        assert self._db is not None
        self._db.execute("UPDATE run SET checkpoint = ?, updated_at = ? WHERE id = 1",
                         (checkpoint.to_json(), _now()))

    def mark_publishing(self) -> None:
        """The final checkpoint is committed and the output is being published: a run
        killed from here on is resumed by finishing the publication (``Sink.resume``)."""
        assert self.state is not None
        self._set(next_state(self.state, "publish"))

    def end(self, event: str) -> None:
        """Record how this run ended (complete, stop, fail, interrupt). Nothing when it never
        began: a refused ``--resume`` leaves the earlier run's state as it was."""
        if self.state is None:
            return
        try:
            state = next_state(self.state, event)
        except ValueError as exc:  # an engine bug; the run's own outcome matters more
            logger.error("run ledger: %s", exc)
            return
        with contextlib.suppress(sqlite3.Error):
            self._set(state)


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing; the folder itself only its owner may open:
    the run directory holds checkpoints, state and the last run's summary."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def pipeline_hash(config_json: str) -> str:
    import hashlib

    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


def default_run_dir(base_dir: Path, name: str, configured: str | None) -> Path:
    return base_dir / configured if configured else base_dir / ".headrace" / "runs" / name

