"""Every example under examples/ runs and accounts for every record."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from headrace.sampledata import write_flights_csv

from .conftest import assert_accounted, demo_api, read_jsonl, run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PIPELINES = sorted(p for p in EXAMPLES.glob("*/pipeline.*") if p.suffix in {".yaml", ".toml"})


def test_there_are_examples() -> None:
    """The examples folder is not empty (the parametrized test below would pass vacuously)."""
    assert len(PIPELINES) >= 3


@pytest.mark.timeout(900)  # http-enrich: 100k requests with faults on a 2-core machine
@pytest.mark.parametrize("pipeline", PIPELINES, ids=[p.parent.name for p in PIPELINES])
def test_example_runs(pipeline: Path, tmp_path: Path) -> None:
    """Copied to a temp folder (examples stay clean), each example runs with exit 0; an HTTP
    example runs against a real ``headrace demo-api`` started with its ``demo-api.args``."""
    work = tmp_path / pipeline.parent.name
    shutil.copytree(pipeline.parent, work, ignore=shutil.ignore_patterns("out", ".headrace"))
    env = {}
    if pipeline.parent.name == "flights":  # its data is generated, not committed
        data = tmp_path / "flights.csv"
        write_flights_csv(data, rows=50_000)
        env["FLIGHTS_CSV"] = str(data)
    if pipeline.parent.name == "http-enrich":  # the size: 100k records
        env["ZIPS_CSV"] = str(_zips_csv(tmp_path / "zips.csv", ENRICH_RECORDS))
    args_file = work / "demo-api.args"
    with contextlib.ExitStack() as stack:
        if args_file.exists():
            env["DEMO_API"] = stack.enter_context(demo_api(*args_file.read_text().split()))
        result = run_cli("run", str(work / pipeline.name), "--json", env=env, timeout=600)
    assert result.code == 0, result.stderr
    summary = result.summary
    assert summary["status"] == "ok"
    assert summary["records_out"] > 0
    assert_accounted(summary)
    check = EXTRA_CHECKS.get(pipeline.parent.name)
    if check is not None:
        check(work, summary)


ENRICH_RECORDS = 100_000


def _zips_csv(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("id,zip,name\n")
        for i in range(1, n + 1):
            f.write(f"{i},{(i * 7919) % 100000:05d},customer-{i}\n")
    return path


def _check_enrich(work: Path, summary: dict[str, Any]) -> None:
    """Every one of the 100k records is in the output or the dead-letter file, once."""
    out = read_jsonl(work / "out" / "enriched.jsonl")
    dead_path = work / "out" / "enriched.dead.jsonl"
    dead = read_jsonl(dead_path) if dead_path.exists() else []
    ids = [r["id"] for r in out] + [d["record"]["id"] for d in dead]
    assert sorted(ids) == list(range(1, ENRICH_RECORDS + 1))
    assert summary["records_in"] == ENRICH_RECORDS
    assert all(r["city"] for r in out)
    assert sum(s["retries"] for s in summary["steps"]) > 0  # the faults were really there


def _check_download(work: Path, summary: dict[str, Any]) -> None:
    rows = read_jsonl(work / "out" / "downloads.jsonl")
    assert len(rows) == 2000 == summary["records_out"]
    for row in rows[:50]:
        data = (work / "out" / "files" / row["download"]["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["download"]["sha256"]
    names = {p.name for p in (work / "out" / "files").iterdir()}
    assert len(names) == 2000 and not any(n.endswith(".part") for n in names)


def _check_harvest(work: Path, summary: dict[str, Any]) -> None:
    ids = pq.read_table(work / "out" / "items.parquet", columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == list(range(1, 5001))


def _check_events(work: Path, summary: dict[str, Any]) -> None:
    """One row per event, each with the first delivery's values and its revenue."""
    first: dict[str, dict[str, Any]] = {}
    for event in read_jsonl(work / "data" / "events.jsonl"):
        first.setdefault(event["event_id"], event)
    with contextlib.closing(sqlite3.connect(work / "out" / "events.db")) as db:
        rows = db.execute("SELECT event_id, kind, amount, revenue FROM events").fetchall()
    assert len(rows) == len(first) == summary["records_out"]
    for event_id, kind, amount, revenue in rows:
        assert (kind, amount) == (first[event_id]["kind"], first[event_id]["amount"])
        assert revenue == (amount if kind == "buy" else 0.0)


def _check_report(work: Path, summary: dict[str, Any]) -> None:
    """The CSV holds exactly the paid orders with a positive amount, with gross = 1.2x."""
    with contextlib.closing(sqlite3.connect(work / "data" / "shop.db")) as db:
        paid = dict(db.execute("SELECT id, amount FROM orders WHERE status = 'paid' AND "
                               "amount > 0").fetchall())
    with (work / "out" / "paid-orders.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["id"]) for r in rows} == set(paid) and len(rows) == len(paid)
    assert all(abs(float(r["gross"]) - round(paid[int(r["id"])] * 1.2, 2)) < 1e-9
               for r in rows)


EXTRA_CHECKS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "http-enrich": _check_enrich,
    "http-download": _check_download,
    "http-harvest": _check_harvest,
    "events-cleanup": _check_events,
    "sqlite-report": _check_report,
}
