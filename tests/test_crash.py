"""Crash consistency: SIGKILL a real ``headrace run`` at 20 seeded moments, ``--resume`` after
each, and compare the final output with an uninterrupted run's, record by record.

The input is 150,000 CSV records with ids ``0..N-1``, a random payload and the payload's own
hash, plus a few ragged rows that become dead letters. A checker counts records, not log
lines: lost = in - (out + dead), duplicated, unexpected, corrupt (payload and hash disagree).
Between kills the ledger is read: its record count never goes back, and what it claims is
committed is exactly what the sink's committed output holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

SEED = 20_241_128
RECORDS = 150_000
BAD_LINES = 6  # ragged rows: dead letters
KILLS = 20
HEADRACE = [sys.executable, "-m", "headrace"]

SLOW = """
import time

def slow(table):
    time.sleep(table.num_rows * 25e-6)  # ~4 s for the whole input: kills land mid-run
    return table
"""

SINKS = {
    "jsonl": ("{use: jsonl, path: out/o.jsonl}", "o.jsonl"),
    "parquet": ("{use: parquet, path: out/o.parquet}", "o.parquet"),
    "sqlite": ("{use: sqlite, path: out/o.sqlite, table: items}", "o.sqlite"),
}

Row = tuple[int, str, str]


def digest(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def generate(count: int, seed: int = SEED) -> tuple[str, set[int]]:
    """CSV text with ids 0..count-1 and a payload carrying its own hash; some ragged rows."""
    rng = random.Random(seed)
    bad = set(rng.sample(range(count), min(BAD_LINES, count)))
    lines = ["id,payload,digest\n"]
    for i in range(count):
        payload = f"p{rng.getrandbits(64):016x}"
        extra = ",one field too many" if i in bad else ""
        lines.append(f"{i},{payload},{digest(payload)}{extra}\n")
    return "".join(lines), bad


# -- the checker ----------------------------------------------------------------------------

@dataclass
class Report:
    lost: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)
    corrupt: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.corrupt)


def account(count: int, out: list[Row], dead_ids: list[int]) -> Report:
    """Every id of 0..count-1 exactly once in the output or the dead letters, intact."""
    seen = Counter([r[0] for r in out] + dead_ids)
    return Report(
        lost=sorted(set(range(count)) - seen.keys()),
        duplicated=sorted(i for i, n in seen.items() if n > 1),
        unexpected=sorted(i for i in seen if not 0 <= i < count),
        corrupt=sorted(r[0] for r in out if digest(r[1]) != r[2]),
    )


def rows_of(text: str) -> list[Row]:
    return [(int(i), p, d) for i, p, d in
            (line.split(",") for line in text.splitlines()[1:] if line.count(",") == 2)]


def test_the_checker_reports_a_lost_and_a_duplicated_record() -> None:
    """Test the checker itself: drop one output row and duplicate another; it names both."""
    text, bad = generate(1_000)
    out = rows_of(text)
    assert account(1_000, out, sorted(bad)).clean
    damaged = [r for r in out if r[0] != 10] + [out[20]]
    report = account(1_000, damaged, sorted(bad))
    assert (report.lost, report.duplicated) == ([10], [out[20][0]])
    tampered = [*out[:5], (out[5][0], "pXXXXXXXXXXXXXXXX", out[5][2]), *out[6:]]
    assert account(1_000, tampered, sorted(bad)).corrupt == [out[5][0]]


# -- reading a run's output and ledger --------------------------------------------------------

def read_output(out: Path, sink: str) -> list[Row]:
    if sink == "jsonl":
        lines = (out / "o.jsonl").read_text(encoding="utf-8").splitlines()
        return [(r["id"], r["payload"], r["digest"]) for r in map(json.loads, lines)]
    if sink == "parquet":
        table = pq.read_table(out / "o.parquet")
        return list(zip(*(table.column(c).to_pylist() for c in ("id", "payload", "digest")),
                        strict=True))
    return query(out / "o.sqlite", "SELECT id, payload, digest FROM items ORDER BY rowid")


def read_dead(out: Path) -> list[tuple[str, int]]:
    """Dead letters as (record, line): not their timestamps or batch byte ranges."""
    path = out / "o.dead.jsonl"
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(json.dumps(e["record"], sort_keys=True), e["position"]["line"]) for e in entries]


def query(db: Path, sql: str, *args: Any) -> list[Any]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def ledger(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The last run's status and checkpoint, read while no run is going on."""
    path = folder / ".headrace" / "runs" / "crash" / "ledger.sqlite"
    if not path.exists():
        return None, None
    try:
        rows = query(path, "SELECT status, checkpoint FROM run")
    except sqlite3.OperationalError:  # killed before the table was made
        return None, None
    if not rows:
        return None, None
    status, checkpoint = rows[0]
    return status, json.loads(checkpoint) if checkpoint else None


def committed_rows(out: Path, sink: str, state: dict[str, Any]) -> int:
    """How many records the sink's committed output holds, by the checkpoint's sink state."""
    if sink == "jsonl":
        data = (out / ".o.jsonl.partial").read_bytes() if state.get("bytes") else b""
        committed = data[:state.get("bytes", 0)]
        assert len(data) >= len(committed) and committed[-1:] in (b"", b"\n")
        return committed.count(b"\n")
    if sink == "parquet":
        parts = out / ".o.parquet.parts"
        return sum(pq.ParquetFile(parts / f"part-{i:06d}.parquet").metadata.num_rows
                   for i in range(state.get("segments", 0)))
    if not query(out / "o.sqlite", "SELECT 1 FROM sqlite_master WHERE name = 'items'"):
        return 0
    return query(out / "o.sqlite", "SELECT count(*) FROM items WHERE rowid <= ?",
                 state["rowid"])[0][0]


def committed_dead(out: Path, state: dict[str, Any]) -> int:
    length = state.get("bytes", 0)
    data = (out / ".o.dead.jsonl.partial").read_bytes()[:length] if length else b""
    assert data[-1:] in (b"", b"\n")
    return data.count(b"\n")


# -- the runs --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[int]]:
    folder = tmp_path_factory.mktemp("input")
    text, bad = generate(RECORDS)
    (folder / "in.csv").write_text(text, encoding="utf-8")
    return folder / "in.csv", bad


def prepare(folder: Path, csv: Path, sink: str) -> Path:
    folder.mkdir()
    shutil.copy(csv, folder / "in.csv")
    (folder / "slowfn.py").write_text(SLOW, encoding="utf-8")
    path = folder / "p.yaml"
    path.write_text(f"""version: 1
name: crash
source: {{use: csv, path: in.csv, block_size: 65536,
          types: {{id: int64, payload: string, digest: string}}}}
steps:
  - {{use: python, function: "slowfn:slow", mode: batch, format: arrow}}
sink: {SINKS[sink][0]}
runtime: {{checkpoint_interval: 0.25, max_failures: 100}}
""", encoding="utf-8")
    return path


def start(path: Path, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*HEADRACE, "run", str(path), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"})


def finished(proc: subprocess.Popen[bytes], stderr: bytes) -> None:
    """A run that ended before its kill: it completed, or there was nothing left to resume."""
    text = stderr.decode(errors="replace")
    done = proc.returncode == 2 and "nothing to resume: the last run completed" in text
    assert proc.returncode == 0 or done, text


def check_ledger(folder: Path, sink: str, floor: int) -> int:
    """After a kill: the checkpoint never goes back, and never claims more than is committed."""
    status, checkpoint = ledger(folder)
    if checkpoint is None:
        assert floor == 0, "the ledger lost its checkpoint"
        return 0
    records = checkpoint["records"]
    assert records >= floor, f"checkpoint went back from {floor} to {records}"
    if status not in ("completed", "publishing"):  # else the final names hold the output
        out = folder / "out"
        dead = committed_dead(out, checkpoint["dead_letters"])
        assert dead == checkpoint["dead_letters"]["count"]
        assert committed_rows(out, sink, checkpoint["sink"]) == records - dead, checkpoint
    return int(records)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("sink", list(SINKS))
def test_sigkill_and_resume_gives_the_uninterrupted_output(
        source: tuple[Path, set[int]], tmp_path: Path, sink: str) -> None:
    """20 SIGKILLs at seeded moments, each followed by --resume: the output holds exactly
    the reference run's records in its order (0 lost, 0 duplicated, none corrupt), the same
    dead letters, and no temporary or partial files."""
    csv, bad = source
    reference = prepare(tmp_path / "reference", csv, sink)
    started = time.monotonic()
    proc = start(reference)
    _, stderr = proc.communicate(timeout=120)
    duration = time.monotonic() - started
    assert proc.returncode == 0, stderr.decode()
    ref_out = reference.parent / "out"
    expected, expected_dead = read_output(ref_out, sink), read_dead(ref_out)
    assert account(RECORDS, expected, sorted(bad)).clean
    assert len(expected_dead) == len(bad)

    path = prepare(tmp_path / "crashed", csv, sink)
    rng = random.Random(f"{SEED}-{sink}")
    kills, floor = 0, 0
    # Kill moments from 0.3 s to a third of an uninterrupted run, start-up (~1 s) included:
    # some runs die before their first checkpoint, most while writing, a few while
    # publishing; short enough that most of the 20 kills land before the work is done.
    for attempt in range(KILLS):
        proc = start(path, *(["--resume"] if attempt else []))
        try:
            _, stderr = proc.communicate(timeout=rng.uniform(0.3, max(1.0, duration / 3)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            kills += 1
            floor = check_ledger(path.parent, sink, floor)
            continue
        finished(proc, stderr)
        break
    else:
        proc = start(path, "--resume")
        _, stderr = proc.communicate(timeout=120)
        finished(proc, stderr)

    print(f"{sink}: reference run {duration:.1f} s, {kills} kills, checkpoint {floor}")
    out = path.parent / "out"
    output, dead = read_output(out, sink), read_dead(out)
    dead_ids = [int(json.loads(record)["line"].split(",")[0]) for record, _ in dead]
    report = account(RECORDS, output, dead_ids)
    assert report.clean, f"after {kills} kills: {report}"
    assert output == expected
    if sink == "jsonl":  # line formats: byte for byte
        assert (out / "o.jsonl").read_bytes() == (ref_out / "o.jsonl").read_bytes()
    assert dead == expected_dead
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref_out.iterdir())
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert kills >= 5, f"only {kills} kills landed before the run ended"


# -- a kill while the output is being published ------------------------------------------------

DIE_AT = """
import importlib, os, signal, sys

module, name, when = sys.argv[1:4]
target = importlib.import_module(module)
real = getattr(target, name)

def die(*args, **kwargs):
    if when == "after":
        real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(target, name, die)
from headrace.cli import main

sys.argv = ["headrace", *sys.argv[4:]]
main()
"""


@pytest.mark.parametrize("case", [
    ("jsonl", 60, "headrace.builtins._file_sink", "publish", "after", "o.jsonl"),
    ("jsonl", 60, "headrace.engine._deadletter", "publish", "after", "o.dead.jsonl"),
    ("parquet", 60, "headrace.builtins._sinks", "publish", "before", ".o.parquet.partial"),
    ("parquet", 0.05, "shutil", "rmtree", "before", ".o.parquet.parts"),
], ids=["jsonl-published", "dead-letters-published", "parquet-one-segment-moved",
        "parquet-segments-assembled"])
def test_a_kill_while_publishing_is_finished_by_resume(
        tmp_path: Path, case: tuple[str, float, str, str, str, str]) -> None:
    """SIGKILL between the final checkpoint and the ledger's 'completed', at each step of
    the publication: --resume finishes it (exit 0) with every record exactly once, the dead
    letters published, no hidden file left; a further --resume has nothing to do."""
    sink, interval, module, name, when, left = case  # kill in module.name, before/after it
    text, bad = generate(20_000, seed=7)
    (tmp_path / "in.csv").write_text(text, encoding="utf-8")
    path = prepare(tmp_path / "run", tmp_path / "in.csv", sink)
    path.write_text(path.read_text().replace("checkpoint_interval: 0.25",
                                             f"checkpoint_interval: {interval}"))
    killed = subprocess.run([sys.executable, "-c", DIE_AT, module, name, when,
                             "run", str(path)], capture_output=True, timeout=60, check=False)
    assert killed.returncode == -9, killed.stderr.decode()
    out = path.parent / "out"
    assert (out / left).exists()
    if name == "rmtree":
        assert len(list((out / left).glob("part-*"))) > 1  # several segments were assembled
    assert ledger(path.parent)[0] == "publishing"

    proc = start(path, "--resume")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert read_output(out, sink) == [r for r in rows_of(text) if r[0] not in bad]
    assert sorted(line for _, line in read_dead(out)) == sorted(i + 2 for i in bad)
    assert sorted(p.name for p in out.iterdir()) == ["o.dead.jsonl", f"o.{sink}"]
    proc = start(path, "--resume")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"the last run completed" in stderr
