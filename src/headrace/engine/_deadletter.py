"""The dead-letter output: one JSON line per record that did not make it, with its reason."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from headrace.config import redact
from headrace.errors import SinkError
from headrace.plugin import DeadRecord, Position

from ._files import discard, prepare_output, publish, temp_path_for

MAX_RECORD_CHARS = 64 * 1024


def _encode_record(record: Any) -> str:
    """The record as JSON text, or a stand-in with its prefix, length and hash when large."""
    text = json.dumps(record, default=str, ensure_ascii=False)
    if len(text) <= MAX_RECORD_CHARS:
        return text
    return json.dumps({
        "truncated": text[:1024],
        "chars": len(text),
        "sha256": hashlib.sha256(text.encode("utf-8", "replace")).hexdigest(),
    }, ensure_ascii=False)


class DeadLetterWriter:
    """Appends dead letters to a temporary file; ``finish`` publishes it under ``path``.

    Published also when the run fails or is interrupted: the records in it are accounted
    for. A run without dead letters leaves no file (and removes one a previous run left).
    Checkpoints fsync the file and note its length; a resumed run cuts it back to that.
    """

    def __init__(self, path: Path, pipeline: str, pipeline_hash: str = "") -> None:
        self.path = path
        self.pipeline = pipeline
        self.pipeline_hash = pipeline_hash
        self.count = 0
        self._temp: Path | None = None
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()
        self._published = False

    def _entry(self, step: str, position: Position | None, item: DeadRecord, now: str) -> str:
        where: dict[str, Any] = {"source": position.source if position else None}
        if item.row_id is not None:
            where["line" if position is None or position.unit in ("byte", "line") else "row"] = (
                item.row_id)
        if position is not None:
            where.update({"start": position.start, "end": position.end, "unit": position.unit})
        entry = {
            "step": step,
            "error": item.error,
            "message": redact(item.message),
            "attempts": item.attempts,
            "first_attempt": item.first_at or now,
            "last_attempt": item.last_at or now,
            "position": where,
            "pipeline": self.pipeline,
            "pipeline_hash": self.pipeline_hash,
        }
        # The record's text is made once (its size decides truncation) and spliced in first.
        rest = json.dumps(entry, default=str, ensure_ascii=False)
        return '{"record": ' + _encode_record(item.record) + ", " + rest[1:] + "\n"

    def _open(self) -> IO[str]:
        if self._handle is None:
            self._temp = prepare_output(self.path)
            self._handle = open(self._temp, "w", encoding="utf-8")  # noqa: SIM115
        return self._handle

    def write(self, step: str, position: Position | None, dead: list[DeadRecord]) -> None:
        """Blocking: call from a worker thread."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        lines = [self._entry(step, position, item, now) for item in dead]
        with self._lock:
            self._open().writelines(lines)
            self.count += len(dead)

    def checkpoint(self) -> dict[str, Any]:
        """Blocking: make what was written durable; the state ``resume`` takes."""
        with self._lock:
            if self._handle is None:
                return {"bytes": 0, "count": self.count}
            self._handle.flush()
            os.fsync(self._handle.fileno())
            return {"bytes": self._handle.tell(), "count": self.count}

    def resume(self, state: dict[str, Any], publishing: bool = False) -> None:
        """Blocking: continue the file a checkpoint described, dropping anything after it.
        ``publishing``: the run was killed while publishing, maybe after this file."""
        length = int(state.get("bytes", 0))
        if not length:
            return
        self._temp = prepare_output(self.path)
        self.count = int(state.get("count", 0))
        if publishing and not self._temp.exists() and self.path.exists():
            self._published = True
            return
        try:
            handle = open(self._temp, "r+", encoding="utf-8")  # noqa: SIM115
        except FileNotFoundError:
            raise SinkError(f"cannot resume: the partial dead-letter file {self._temp} is gone",
                            hint="run without --resume to start over") from None
        handle.truncate(length)
        handle.seek(length)
        self._handle = handle

    def close(self) -> None:
        """Blocking: close without publishing (an interrupted, resumable run)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def finish(self) -> None:
        with self._lock:
            if self._published:
                return
            if self._handle is None:  # none written: no file, also none an earlier run left
                discard(self.path)
                discard(temp_path_for(self.path))
                return
            self._handle.close()
            self._handle = None
            assert self._temp is not None
            publish(self._temp, self.path)


def summarize_dead_letters(path: Path, samples: int = 3) -> dict[str, Any]:
    """Counts by step and error, and the first ``samples`` of each, reading ``path`` as a stream.

    Lines that are not dead letters (not JSON objects) are counted as ``unreadable``.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    total = unreadable = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for text in handle:
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
            except ValueError:
                unreadable += 1
                continue
            if not isinstance(entry, dict):
                unreadable += 1
                continue
            total += 1
            key = (str(entry.get("step")), str(entry.get("error")))
            group = groups.setdefault(key, {"step": key[0], "error": key[1], "count": 0,
                                            "samples": []})
            group["count"] += 1
            if len(group["samples"]) < samples:
                group["samples"].append({k: entry.get(k) for k in ("position", "message",
                                                                   "record")})
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["step"], g["error"]))
    return {"path": str(path), "total": total, "unreadable": unreadable, "groups": ordered}
