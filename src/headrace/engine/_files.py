"""Atomic output files: write under a temporary name in the same folder, rename on success."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from headrace.errors import SinkError


def temp_path_for(final: Path) -> Path:
    # A stable name (no pid): a resumed run continues the file an interrupted run left. Two
    # runs of one pipeline at once are refused by the run directory's lock.
    return final.with_name(f".{final.name}.partial")


def fsync_dir(folder: Path) -> None:
    """Make renames and new names in ``folder`` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def prepare_output(final: Path) -> Path:
    """Create the parent folder and return the temporary path to write to."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the folder for {final}: {exc.strerror or exc}") from exc
    if final.is_dir():
        raise SinkError(f"{final} is a directory; the sink needs a file path")
    if not os.access(final.parent, os.W_OK):
        raise SinkError(f"{final.parent} is not writable")
    return temp_path_for(final)


def publish(temp: Path, final: Path) -> None:
    """fsync ``temp``, rename it to ``final``, fsync the folder. On failure ``temp`` stays:
    it holds committed output that ``--resume`` publishes (an aborted run discards it)."""
    try:
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise SinkError(f"cannot write {final}: {exc.strerror or exc}") from exc


def discard(temp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
