"""The stateful steps ``dedupe``, ``aggregate`` and ``rebatch`` in real ``headrace run``
subprocesses: results against pure-Python references on random data (nulls included),
spilling forced by tiny memory settings changes nothing, SIGKILL + ``--resume`` gives the
uninterrupted output, bad options are config errors with file:line, and memory stays flat
as the input grows."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.builtins._stateful._sketch import SENTINEL, bucket_keys, quantiles
from headrace.sampledata import write_flights_csv

from .conftest import HEADRACE, assert_accounted, read_jsonl, run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ACCURACY = 0.01

# ----------------------------------------------------------------------------- data


def _records(n: int, seed: int = 1, groups: int = 30) -> list[dict[str, Any]]:
    """``id``; keys ``g`` (text, ~3% null) and ``h`` (0..4); ``x`` float (~5% null, with
    zeros and negatives); ``y`` int; ``s`` text."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        x = None if rng.random() < 0.05 else round(rng.lognormvariate(3, 1.2), 3)
        if x is not None and rng.random() < 0.1:
            x = -x if rng.random() < 0.5 else 0.0
        rows.append({"id": i,
                     "g": None if rng.random() < 0.03 else f"g{rng.randrange(groups):03d}",
                     "h": rng.randrange(5), "x": x, "y": rng.randrange(-50, 1000),
                     "s": f"s{rng.randrange(10**6):06d}"})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return path


def _pipeline(folder: Path, steps: str, *, name: str = "p", sink: str = "out/o.jsonl",
              slow: bool = False, block_size: int = 65536, extra: str = "") -> Path:
    slowdown = ""
    if slow:
        (folder / "slowdown.py").write_text(
            "import time\n\ndef slow(table):\n"
            "    time.sleep(table.num_rows * 150e-6)\n    return table\n")
        slowdown = ("  - use: python\n    function: slowdown:slow\n    mode: batch\n"
                    "    format: arrow\n")
    text = (f"version: 1\nname: {name}\nsource:\n  use: jsonl\n  path: in.jsonl\n"
            f"  block_size: {block_size}\nsteps:\n{slowdown}{steps}sink:\n  use: jsonl\n"
            f"  path: {sink}\nruntime:\n  checkpoint_interval: 1ms\n{extra}")
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def _metric(summary: dict[str, Any], step: str, name: str) -> float:
    """A plugin counter from the summary (0 when never emitted)."""
    return float(summary.get("plugin_metrics", {}).get(step, {}).get(name, 0))


LENIENT = "  max_failures: 1000\n"


def _run(pipeline: Path) -> dict[str, Any]:
    result = run_cli("run", str(pipeline), "--json", timeout=300)
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    return result.summary


# ----------------------------------------------------------------------------- references


def _first_by_key(rows: list[dict[str, Any]], key: list[str]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in seen:
            seen.add(k)
            out.append(row)
    return out


def _lower_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def _aggregate_reference(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)

    def order(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:  # nulls last
        return tuple((v is None, v if v is not None else 0) for v in item[0])

    out = []
    for key, members in sorted(groups.items(), key=order):
        xs = [r["x"] for r in members if r["x"] is not None]
        out.append({**dict(zip(keys, key, strict=True)), "n": len(members), "nx": len(xs),
                    "total": sum(r["y"] for r in members),
                    "xs": math.fsum(xs) if xs else None,
                    "ym": sum(r["y"] for r in members) / len(members),
                    "avg": sum(xs) / len(xs) if xs else None,
                    "lo": min(xs) if xs else None, "hi": max(r["s"] for r in members),
                    "p50": _lower_quantile(xs, 0.5) if xs else None,
                    "p95": _lower_quantile(xs, 0.95) if xs else None})
    return out


AGGREGATE = """\
  - use: aggregate
    group_by: [{keys}]
    memory_budget: {budget}
    metrics:
      n: count(*)
      nx: count(x)
      total: sum(y)
      xs: sum(x)
      avg: mean(x)
      ym: mean(y)
      lo: min(x)
      hi: max(s)
      p50: approx_quantile(x, 0.5)
      p95: approx_quantile(x, 0.95)
"""


def _close(actual: float | None, expected: float | None, relative: float) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return abs(actual - expected) <= relative * abs(expected) + 1e-12


def _check_aggregate(out: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [{k: r[k] for k in ("g", "h", "n", "nx", "total", "lo", "hi") if k in r}
            for r in out] == \
           [{k: r[k] for k in ("g", "h", "n", "nx", "total", "lo", "hi") if k in r}
            for r in expected]
    for got, want in zip(out, expected, strict=True):
        for name in ("avg", "xs", "ym"):
            assert _close(got[name], want[name], 1e-12), (name, got, want)
        for q in ("p50", "p95"):
            assert _close(got[q], want[q], ACCURACY), (q, got, want)


# ----------------------------------------------------------------------------- aggregate


@pytest.mark.parametrize("budget", ["256MB", "2KB"], ids=["in-memory", "spilled"])
@pytest.mark.parametrize("keys", [["g", "h"], ["g"], []], ids=["g,h", "g", "global"])
def test_aggregate_matches_reference(tmp_path: Path, keys: list[str], budget: str) -> None:
    """Counts, sums, min/max exactly, means to 1e-9 and quantiles within 1% of a pure-Python
    reference; null keys make a group of their own, sorted last; a 2KB budget (spilling
    after every batch) gives the same output."""
    rows = _records(30_000)
    _write_jsonl(tmp_path / "in.jsonl", rows)
    pipeline = _pipeline(tmp_path, AGGREGATE.format(keys=", ".join(keys), budget=budget),
                         block_size=16384)
    summary = _run(pipeline)
    out = read_jsonl(tmp_path / "out/o.jsonl")
    expected = _aggregate_reference(rows, keys)
    _check_aggregate(out, expected)
    assert summary["records_filtered"] == len(rows) - len(expected)  # merged into group rows
    assert bool(_metric(summary, "aggregate", "aggregate_spills")) == (budget == "2KB")


def test_aggregate_spilled_output_is_identical(tmp_path: Path) -> None:
    """Spilled or not, and whatever the batch size, the output is the same byte for byte:
    float sums are exact, so the order partials merge in does not show."""
    _write_jsonl(tmp_path / "in.jsonl", _records(20_000, seed=3, groups=400))
    outputs = []
    for budget, block in (("256MB", 8192), ("1KB", 8192), ("256MB", 1 << 20)):
        pipeline = _pipeline(tmp_path, AGGREGATE.format(keys="g, h", budget=budget),
                             name=f"p{len(outputs)}", sink=f"out/{len(outputs)}.jsonl",
                             block_size=block)
        _run(pipeline)
        outputs.append((tmp_path / f"out/{len(outputs)}.jsonl").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_aggregate_empty_input_emits_nothing(tmp_path: Path) -> None:
    """No records, no groups (a global aggregate too): nothing out, nothing filtered."""
    (tmp_path / "in.jsonl").write_text("")
    summary = _run(_pipeline(tmp_path, AGGREGATE.format(keys="", budget="1MB")))
    assert summary["records_out"] == 0
    assert read_jsonl(tmp_path / "out/o.jsonl") == []


def _sketch_quantile(chunks: list[np.ndarray], q: float) -> float:
    """The sketch's q-quantile of one group built from ``chunks`` merged as partials."""
    counts: dict[int, int] = defaultdict(int)
    for chunk in chunks:
        keys, n = np.unique(bucket_keys(chunk, ACCURACY), return_counts=True)
        for k, c in zip(keys.tolist(), n.tolist(), strict=True):
            counts[k] += c
    buckets = np.array([SENTINEL, *sorted(counts)], dtype=np.int64)
    weights = np.array([0, *(counts[k] for k in sorted(counts))], dtype=np.int64)
    values, has = quantiles(buckets, weights, q, ACCURACY)
    assert has[0]
    return float(values[0])


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
                       min_size=1, max_size=400),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
       q=st.floats(min_value=0, max_value=1))
def test_quantile_sketch_error_bound(values: list[float], cuts: list[int], q: float) -> None:
    """However the values are split into merged partials, the sketch's quantile is within
    the relative accuracy (1%) of the exact lower quantile."""
    data = np.array(values)
    chunks = np.split(data, sorted(c % (len(data) + 1) for c in cuts))
    estimate = _sketch_quantile(chunks, q)
    exact = _lower_quantile(values, q)
    assert abs(estimate - exact) <= ACCURACY * abs(exact) * (1 + 1e-9) + 1e-300


def test_quantile_sketch_measured_error() -> None:
    """On 100k lognormal, normal and uniform values, the largest relative error over
    p1..p99 stays below the 1% bound (printed: the measured figure)."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for data in (rng.lognormal(3, 1.5, 100_000), rng.normal(0, 100, 100_000),
                 rng.uniform(0, 1000, 100_000)):
        chunks = np.array_split(data, 37)
        for q in np.linspace(0.01, 0.99, 99):
            exact = _lower_quantile(list(data), float(q))
            estimate = _sketch_quantile(chunks, float(q))
            worst = max(worst, abs(estimate - exact) / abs(exact))
    print(f"\nquantile sketch: worst relative error {worst:.4%} (bound {ACCURACY:.0%})")
    assert worst <= ACCURACY


# ----------------------------------------------------------------------------- dedupe


DEDUPE = """\
  - use: dedupe
    key: [{keys}]
{options}"""


@pytest.mark.parametrize(("options", "spills"), [
    ("", False), ("    memory: 1KB\n", True),
], ids=["exact", "exact-spilled"])
@pytest.mark.parametrize("keys", [["g", "h"], ["s"]], ids=["g,h", "s"])
def test_dedupe_exact_matches_reference(tmp_path: Path, keys: list[str], options: str,
                                        spills: bool) -> None:
    """The first record of each key, in input order (a null key is a key: its first record
    goes on); with a 1KB memory the keys spill to disk and the output is the same."""
    rows = _records(30_000, groups=3000)
    _write_jsonl(tmp_path / "in.jsonl", rows)
    summary = _run(_pipeline(tmp_path, DEDUPE.format(keys=", ".join(keys), options=options),
                             block_size=16384))
    expected = _first_by_key(rows, keys)
    assert read_jsonl(tmp_path / "out/o.jsonl") == expected
    assert summary["records_filtered"] == len(rows) - len(expected)
    assert bool(_metric(summary, "dedupe", "dedupe_spilled")) == spills


def test_dedupe_probabilistic_drops_within_its_rate(tmp_path: Path) -> None:
    """The Bloom filter never lets a duplicate through (no false negatives); the unique
    records it drops (false positives) stay within a few times the configured rate."""
    rows = _records(40_000, groups=3000)
    for row in rows:
        row["k"] = row["id"] % 20_000  # 20,000 distinct keys, each twice
    _write_jsonl(tmp_path / "in.jsonl", rows)
    options = "    mode: probabilistic\n    capacity: 20000\n    false_positive_rate: 0.01\n"
    summary = _run(_pipeline(tmp_path, DEDUPE.format(keys="k", options=options),
                             block_size=16384))
    out = read_jsonl(tmp_path / "out/o.jsonl")
    expected = _first_by_key(rows, ["k"])
    kept_ids = [r["id"] for r in out]
    assert set(kept_ids) <= {r["id"] for r in expected}  # never a second record of a key
    assert kept_ids == sorted(kept_ids)
    lost = len(expected) - len(out)
    print(f"\nBloom filter at capacity, rate 0.01: {lost} of {len(expected)} unique dropped")
    assert lost <= 0.03 * len(expected)
    assert summary["records_filtered"] == len(rows) - len(out)


def test_bloom_decisions_do_not_depend_on_batches(tmp_path: Path) -> None:
    """Over capacity (many false positives), the records the Bloom filter keeps are the same
    whether the keys come one at a time, all at once or in uneven batches."""
    from headrace.builtins._stateful._bloom import BloomSeen
    from headrace.builtins._stateful._keys import first_occurrences

    rng = np.random.default_rng(3)
    keys = rng.integers(0, 256, (6000, 16), dtype=np.uint8).view("V16").ravel()
    keys = np.concatenate([keys, keys[:2000]])

    def kept(cuts: list[int]) -> list[int]:
        folder = tmp_path / str(len(cuts))
        folder.mkdir()
        bloom = BloomSeen(folder / "log", 3000, 0.05)
        bloom.forget_from(0)
        out: list[int] = []
        for start, stop in itertools.pairwise(cuts):
            distinct, first = first_occurrences(keys[start:stop])
            new = ~bloom.contains(distinct, order=first)
            bloom.add(distinct[new], start)
            out += sorted((first[new] + start).tolist())
        bloom.close()
        return out

    one_by_one = kept(list(range(len(keys) + 1)))
    assert len(one_by_one) < 6000  # false positives happened
    assert kept([0, len(keys)]) == one_by_one
    assert kept([0, 1000, 1001, 5000, len(keys)]) == one_by_one


def test_dedupe_keeps_row_ids(tmp_path: Path) -> None:
    """Records after dedupe keep their line: a later step's dead letter names it."""
    rows = _records(2_000, groups=50)
    _write_jsonl(tmp_path / "in.jsonl", rows)
    (tmp_path / "boom.py").write_text(
        "def boom(record):\n    if record['id'] % 7 == 3:\n        raise ValueError('x')\n"
        "    return record\n")
    steps = DEDUPE.format(keys="g", options="") + "  - use: python\n    function: boom:boom\n"
    _run(_pipeline(tmp_path, steps, extra=LENIENT))
    dead = read_jsonl(tmp_path / "out/o.dead.jsonl")
    assert dead
    for entry in dead:
        assert entry["position"]["line"] == entry["record"]["id"] + 1


# ----------------------------------------------------------------------------- rebatch


def _batch_marks(folder: Path) -> None:
    (folder / "marks.py").write_text(
        "import pyarrow as pa\n\ndef mark(table):\n"
        "    first = table.column('id')[0].as_py()\n"
        "    return table.append_column('batch', pa.array([first] * table.num_rows))\n")


MARK = "  - use: python\n    function: marks:mark\n    mode: batch\n    format: arrow\n"


@pytest.mark.parametrize(("block_size", "rows"), [(4096, 1000), (65536, 700), (8192, 333)],
                         ids=["merge", "split", "mixed"])
def test_rebatch_rows(tmp_path: Path, block_size: int, rows: int) -> None:
    """Records come out unchanged and in order, in batches of at most ``rows`` and more
    than half of it (all but the last)."""
    records = _records(20_000)
    _write_jsonl(tmp_path / "in.jsonl", records)
    _batch_marks(tmp_path)
    steps = f"  - use: rebatch\n    rows: {rows}\n" + MARK
    summary = _run(_pipeline(tmp_path, steps, block_size=block_size))
    out = read_jsonl(tmp_path / "out/o.jsonl")
    assert [{k: v for k, v in r.items() if k != "batch"} for r in out] == records
    sizes = list(_run_lengths([r["batch"] for r in out]))
    assert all(rows / 2 <= s <= rows for s in sizes[:-1]), sizes
    assert 0 < sizes[-1] <= rows
    assert summary["records_out"] == len(records)


def test_batch_alias_and_bytes(tmp_path: Path) -> None:
    """``batch`` is ``rebatch``; ``bytes: 64KB`` gives batches of about 64KB of Arrow data
    (measured by the average row size of what it holds)."""
    records = _records(20_000)
    _write_jsonl(tmp_path / "in.jsonl", records)
    _batch_marks(tmp_path)
    steps = "  - use: batch\n    bytes: 64KB\n" + MARK
    _run(_pipeline(tmp_path, steps, block_size=1 << 20))
    out = read_jsonl(tmp_path / "out/o.jsonl")
    assert [r["id"] for r in out] == list(range(len(records)))
    sizes = list(_run_lengths([r["batch"] for r in out]))
    row_bytes = 8 * 4 + 4 * 2 + 4 + 7 + 1  # id, h, x, y + two offsets + g, s text + validity
    assert len(sizes) > 5
    assert all(s * row_bytes <= 64 * 1024 * 1.2 for s in sizes), sizes


def test_rebatch_keeps_row_ids(tmp_path: Path) -> None:
    """Merged and split batches keep each record's line for dead letters further down."""
    records = _records(3_000)
    _write_jsonl(tmp_path / "in.jsonl", records)
    (tmp_path / "boom.py").write_text(
        "def boom(record):\n    if record['id'] % 97 == 5:\n        raise ValueError('x')\n"
        "    return record\n")
    steps = "  - use: rebatch\n    rows: 250\n  - use: python\n    function: boom:boom\n"
    _run(_pipeline(tmp_path, steps, block_size=4096, extra=LENIENT))
    dead = read_jsonl(tmp_path / "out/o.dead.jsonl")
    assert [d["record"]["id"] for d in dead] == [i for i in range(3000) if i % 97 == 5]
    assert all(d["position"]["line"] == d["record"]["id"] + 1 for d in dead)


def _run_lengths(values: list[Any]) -> list[int]:
    sizes: list[int] = []
    previous = object()
    for value in values:
        if value != previous:
            sizes.append(0)
            previous = value
        sizes[-1] += 1
    return sizes


# ----------------------------------------------------------------------------- resume

KILL_RECORDS = 40_000
def _checkpointed(folder: Path) -> int:
    """Records the ledger of ``folder``'s pipeline ``p`` says are committed (0: none yet)."""
    import sqlite3

    path = folder / ".headrace" / "runs" / "p" / "ledger.sqlite"
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=1)) as db:
            row = db.execute("SELECT checkpoint FROM run WHERE id = 1").fetchone()
    except sqlite3.Error:
        return 0
    return int(json.loads(row[0])["records"]) if row and row[0] else 0


KILL_CASES = {
    "dedupe": DEDUPE.format(keys="g, h", options=""),
    "dedupe-spilled": DEDUPE.format(keys="s", options="    memory: 4KB\n"),
    "dedupe-bloom": DEDUPE.format(
        keys="s", options="    mode: probabilistic\n    capacity: 5000\n"),
    "aggregate": AGGREGATE.format(keys="g, h", budget="256MB"),
    "aggregate-spilled": AGGREGATE.format(keys="g, h", budget="2KB"),
    "rebatch": "  - use: rebatch\n    rows: 1500\n",
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(KILL_CASES))
def test_sigkill_and_resume(tmp_path: Path, case: str) -> None:
    """Killed at three moments, resumed each time: the output is the uninterrupted run's,
    byte for byte (a capacity-bound Bloom filter included: it is rebuilt from its log)."""
    rows = _records(KILL_RECORDS, seed=11, groups=2000)
    reference = tmp_path / "reference"
    killed = tmp_path / "killed"
    for folder in (reference, killed):
        folder.mkdir()
        _write_jsonl(folder / "in.jsonl", rows)
    _run(_pipeline(reference, KILL_CASES[case], slow=True, block_size=8192))
    pipeline = _pipeline(killed, KILL_CASES[case], slow=True, block_size=8192)
    env = {**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull}
    rng = random.Random(case)
    resume: list[str] = []
    committed = 0
    for _ in range(3):
        proc = subprocess.Popen([*HEADRACE, "run", str(pipeline), *resume], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if case.startswith("dedupe"):
            # Killed once this run has committed something of its own (its start-up takes
            # longer on a loaded machine), then a little later: mid-way through, always.
            deadline = time.monotonic() + 60
            while (_checkpointed(killed) <= committed and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            time.sleep(rng.uniform(1.0, 2.0))  # the whole run takes ~6 s
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        committed = _checkpointed(killed)
        resume = ["--resume"]
    final = run_cli("run", str(pipeline), "--resume", "--json", timeout=300)
    if final.code == 2 and "nothing to resume" in final.stderr:  # the last kill came late
        final = run_cli("run", str(pipeline), "--json", timeout=300)
    assert final.code == 0, final.stderr
    assert (killed / "out/o.jsonl").read_bytes() == (reference / "out/o.jsonl").read_bytes()
    if case.startswith("dedupe"):  # its checkpoints move on: the kills were mid-way
        assert final.summary["checkpoint"]["resumed_after"], final.summary["checkpoint"]


@pytest.mark.slow
def test_resume_after_batches_filtered_away(tmp_path: Path) -> None:
    """A filter before an aggregate empties whole batches; killed and resumed, the output
    still counts every kept record (the checkpoint must not pass the held ones)."""
    rows = [{"id": i, "g": f"g{i % 7}", "keep": (i // 2000) % 2} for i in range(40_000)]
    _write_jsonl(tmp_path / "in.jsonl", rows)
    steps = ("  - use: filter\n    where: \"keep = 1\"\n  - use: aggregate\n"
             "    group_by: [g]\n    metrics: {n: count(*)}\n")
    pipeline = _pipeline(tmp_path, steps, slow=True, block_size=16384)
    proc = subprocess.Popen([*HEADRACE, "run", str(pipeline)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull})
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _run_resume = run_cli("run", str(pipeline), "--resume", "--json", timeout=300)
    assert _run_resume.code == 0, _run_resume.stderr
    counts = {r["g"]: r["n"] for r in read_jsonl(tmp_path / "out/o.jsonl")}
    expected: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["keep"]:
            expected[str(row["g"])] += 1
    assert counts == expected


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("steps", "message"), [
    ("  - use: aggregate\n    group_by: [nope]\n    metrics: {n: count(*)}\n",
     "unknown column 'nope'"),
    ("  - use: aggregate\n    group_by: [g]\n    metrics:\n      n: count(*)\n"
     "      t: sum(nope)\n", "unknown column 'nope'"),
    ("  - use: aggregate\n    group_by: [g]\n    metrics:\n      n: count(*)\n"
     "      t: summ(y)\n", "unknown function 'summ'"),
    ("  - use: aggregate\n    group_by: [g]\n    metrics:\n      n: count(*)\n"
     "      t: sum(y\n", "not a metric"),
    ("  - use: aggregate\n    group_by: [g]\n    metrics:\n      n: count(*)\n"
     "      t: approx_quantile(x, 1.5)\n", "not between 0 and 1"),
    ("  - use: aggregate\n    group_by: [g]\n    metrics:\n      n: count(*)\n"
     "      t: mean(s)\n", "not a number"),
    ("  - use: aggregate\n    group_by: [g]\n    metrics: {g: count(*)}\n",
     "name of a group_by column"),
    ("  - use: dedupe\n    key: [nope]\n", "unknown column 'nope'"),
    ("  - use: dedupe\n    key: []\n", "key"),
    ("  - use: dedupe\n    key: [g]\n    false_positive_rate: 2\n", "false_positive_rate"),
    ("  - use: rebatch\n    rows: 0\n", "rows"),
    ("  - use: rebatch\n    size: 1MB\n", "size"),
    ("  - use: rebatch\n    bytes: lots\n", "not a size"),
    ("  - use: batch\n    {}\n", "give rows, bytes or both"),
], ids=["group-column", "metric-column", "function", "syntax", "quantile", "mean-of-text",
        "name-clash", "dedupe-column", "dedupe-no-key", "rate", "rows-0", "size-key",
        "bytes-text", "no-target"])
def test_bad_options_are_config_errors(tmp_path: Path, steps: str, message: str) -> None:
    """Exit 2 before any output, naming the pipeline file and line."""
    _write_jsonl(tmp_path / "in.jsonl", _records(100))
    pipeline = _pipeline(tmp_path, steps.replace("    {}\n", ""))
    result = run_cli("run", str(pipeline))
    assert result.code == 2, result.stderr
    assert message in result.stderr
    assert f"{pipeline.name}:" in result.stderr
    assert not (tmp_path / "out/o.jsonl").exists()


def test_concurrency_is_refused(tmp_path: Path) -> None:
    """These steps keep state: concurrency above 1 is a config error."""
    _write_jsonl(tmp_path / "in.jsonl", _records(100))
    pipeline = _pipeline(tmp_path, "  - use: dedupe\n    key: [g]\n    concurrency: 4\n")
    result = run_cli("run", str(pipeline))
    assert result.code == 2
    assert "one batch at a time" in result.stderr


# ----------------------------------------------------------------------------- example


def test_aggregate_flights_example(tmp_path: Path) -> None:
    """examples/aggregate-flights on 30k generated flights equals a pure-Python reference."""
    import csv

    work = tmp_path / "aggregate-flights"
    shutil.copytree(EXAMPLES / "aggregate-flights", work,
                    ignore=shutil.ignore_patterns("out", ".headrace"))
    data = tmp_path / "flights.csv"
    write_flights_csv(data, rows=30_000, seed=5)
    result = run_cli("run", str(work / "pipeline.yaml"), "--json",
                     env={"FLIGHTS_CSV": str(data)})
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    with data.open(newline="") as f:
        flights = list(csv.DictReader(f))
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in flights:
        groups[(row["carrier"], row["origin"])].append(row)
    with (work / "out/by-carrier-origin.csv").open(newline="") as f:
        out = list(csv.DictReader(f))
    assert [(r["carrier"], r["origin"]) for r in out] == sorted(groups)
    for row in out:
        members = groups[(row["carrier"], row["origin"])]
        delays = [float(m["dep_delay"]) for m in members if m["dep_delay"]]
        assert int(row["flights"]) == len(members)
        assert int(row["passengers"]) == sum(int(m["passengers"]) for m in members)
        assert math.isclose(float(row["avg_delay"]), sum(delays) / len(delays), rel_tol=1e-9)
        assert float(row["max_delay"]) == max(delays)
        exact = _lower_quantile(delays, 0.95)
        assert abs(float(row["p95_delay"]) - exact) <= ACCURACY * abs(exact) + 1e-12


# ----------------------------------------------------------------------------- memory

MiB = 1024 * 1024


def _peak_rss(pipeline: Path) -> int:
    """Peak RSS of a ``headrace run`` subprocess: its VmHWM, sampled until it ends."""
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen([*HEADRACE, "run", "--json", str(pipeline)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull})
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        handle = psutil.Process(proc.pid)
        while not done.is_set():
            with contextlib.suppress(psutil.Error, OSError):
                peak = max(peak, handle.memory_info().rss)
                with open(f"/proc/{proc.pid}/status", encoding="ascii") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]) * 1024)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        done.set()
        sampler.join()
    assert proc.returncode == 0, err.decode()
    assert_accounted(json.loads(out.decode().strip().splitlines()[-1]))
    return peak


def _flat(name: str, small: int, large: int) -> None:
    print(f"\n{name}: peak RSS 1x {small / MiB:.0f} MiB, 5x {large / MiB:.0f} MiB "
          f"({(large / small - 1) * 100:+.1f}%)")
    assert large <= small * 1.10 + 8 * MiB, (name, small, large)


def _csv_pipeline(folder: Path, label: str, rows: int, steps: str) -> Path:
    data = folder / f"{label}.csv"
    write_flights_csv(data, rows=rows, seed=2)
    path = folder / f"{label}.yaml"
    # 1 MiB blocks: the 1x run reaches its steady state too (with the default 8 MiB blocks
    # it ends while the channels still fill, and the comparison would measure that).
    path.write_text(f"version: 1\nname: {label}\nsource: {{use: csv, path: {data.name}, "
                    "block_size: 1048576}\n"
                    f"steps:\n{steps}sink: {{use: jsonl, path: out/{label}.jsonl}}\n")
    return path


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_aggregate_memory_does_not_grow_with_input(tmp_path: Path) -> None:
    """A fixed number of groups (carrier x origin): 5x the input, the same peak RSS."""
    steps = ("  - use: aggregate\n    group_by: [carrier, origin]\n    metrics:\n"
             "      n: count(*)\n      avg: mean(dep_delay)\n"
             "      p95: approx_quantile(dep_delay, 0.95)\n      top: max(distance)\n")
    one = _csv_pipeline(tmp_path, "one", 400_000, steps)
    five = _csv_pipeline(tmp_path, "five", 2_000_000, steps)
    # ~1.5 s runs: the lower of two peaks each, so one scheduling hiccup does not decide
    small = min(_peak_rss(one), _peak_rss(one))
    large = min(_peak_rss(five), _peak_rss(five))
    _flat("aggregate", small, large)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_dedupe_exact_memory_does_not_grow_beyond_its_setting(tmp_path: Path) -> None:
    """Unique keys (every id) past a 4MB memory setting: spilled to disk, 5x the input and
    the same peak RSS."""
    steps = "  - use: dedupe\n    key: [id]\n    memory: 4MB\n"
    small = _peak_rss(_csv_pipeline(tmp_path, "one", 400_000, steps))
    large = _peak_rss(_csv_pipeline(tmp_path, "five", 2_000_000, steps))
    _flat("dedupe (exact, spilled)", small, large)
