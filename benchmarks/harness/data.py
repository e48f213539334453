"""Input files made by headrace's own generator, reused when they already match."""

from __future__ import annotations

import json
import os
from pathlib import Path

from headrace.sampledata import write_flights_csv

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
GENERATOR_VERSION = 1  # bump to invalidate every cached file


def _label(size: int | None, rows: int | None) -> str:
    if rows is not None:
        return f"{rows}rows"
    assert size is not None
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def flights_csv(*, size: int | None = None, rows: int | None = None, seed: int = 0) -> Path:
    """The path of a flights CSV of about ``size`` bytes (or ``rows`` rows), made if needed.

    A sidecar ``.meta.json`` records what was asked for and the file's exact size; the file
    is reused only if both still match.
    """
    path = DATA_DIR / f"flights-{_label(size, rows)}-seed{seed}.csv"
    meta_path = path.with_name(path.name + ".meta.json")
    wanted = {"size": size, "rows": rows, "seed": seed, "generator": GENERATOR_VERSION}
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("wanted") == wanted and meta.get("bytes") == path.stat().st_size:
            return path
    print(f"generating {path.name} ...", flush=True)
    written = write_flights_csv(path, rows=rows, size=size, seed=seed)
    meta = {"wanted": wanted, "rows": written, "bytes": path.stat().st_size}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def row_count(path: Path) -> int:
    """Rows recorded for a generated file."""
    meta_path = path.with_name(path.name + ".meta.json")
    return int(json.loads(meta_path.read_text(encoding="utf-8"))["rows"])


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".meta.json").unlink(missing_ok=True)


def warm_cache(path: Path) -> None:
    """Flush pending writes (a just-generated file), then read ``path`` once so every
    contender starts with it in the page cache."""
    if hasattr(os, "sync"):
        os.sync()
    with path.open("rb") as handle:
        while handle.read(16 * 1024 * 1024):
            pass
