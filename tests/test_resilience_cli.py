"""Resilience policies through real `headrace run` subprocesses: timeouts, Retry signals,
retries of sync functions, rate limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import assert_accounted, read_jsonl, run_cli

RECORDS = 60
HANGING = [i for i in range(1, RECORDS + 1) if i % 7 == 0]

FUNCS = '''
import asyncio
import time

from headrace.plugin import Retry

ATTEMPTS = {}
FAILED_ONCE = set()


async def hang_on_sevens(record):
    if record["id"] % 7 == 0:
        await asyncio.sleep(3600)  # hangs: only the step's timeout ends it
    await asyncio.sleep(0.001)
    return record


async def retry_signal(record):
    ATTEMPTS[record["id"]] = ATTEMPTS.get(record["id"], 0) + 1
    if record["id"] % 5 == 0 and ATTEMPTS[record["id"]] == 1:
        raise Retry(delay=0.2, reason="not ready yet")
    record["attempts"] = ATTEMPTS[record["id"]]
    return record


def flaky_sync(record):
    if record["id"] not in FAILED_ONCE:
        FAILED_ONCE.add(record["id"])
        raise ConnectionError("connection reset by peer")
    record["ok"] = True
    return record


async def quick(record):
    await asyncio.sleep(0)
    return record
'''


def run_pipeline(  # type: ignore[no-untyped-def]
    write, step: str, *, records: int = RECORDS, runtime: str = "", expect_code: int = 0
) -> tuple[dict[str, Any], Path]:
    """Write in.csv (ids 1..records), funcs.py and a pipeline with one python step; run it."""
    write("in.csv", "id,name\n" + "".join(f"{i},n{i}\n" for i in range(1, records + 1)))
    write("funcs.py", FUNCS)
    path = write("p.yaml", f"""
        version: 1
        name: resilience
        source: {{use: csv, path: in.csv}}
        steps:
          - {step}
        sink: {{use: jsonl, path: out/o.jsonl}}
        {runtime}
        """)
    result = run_cli("run", str(path), "--json", timeout=90)
    assert result.code == expect_code, result.stderr
    summary = result.summary
    assert_accounted(summary)
    return summary, path.parent / "out" / "o.jsonl"


HANG_STEP = ("{use: python, function: 'funcs:hang_on_sevens', timeout: 200ms, "
             "retry: {attempts: 2, base: 10ms, cap: 20ms}}")


def test_hanging_records_are_timed_out_retried_and_dead_lettered(write) -> None:
    """Records whose call hangs are timed out, tried twice, then dead-lettered with the reason;
    every other record reaches the output."""
    summary, output = run_pipeline(write, HANG_STEP, runtime="runtime: {max_failures: 100}")
    assert summary["status"] == "ok"
    assert summary["records_in"] == RECORDS
    assert summary["records_dead"] == len(HANGING)
    assert summary["records_out"] == RECORDS - len(HANGING)
    assert summary["steps"][0]["retries"] == len(HANGING)  # one retry per hanging record
    assert sorted(r["id"] for r in read_jsonl(output)) == [
        i for i in range(1, RECORDS + 1) if i not in HANGING]
    dead = read_jsonl(Path(summary["dead_letter"]))
    assert sorted(d["record"]["id"] for d in dead) == HANGING
    for letter in dead:
        assert letter["step"] == "python"
        assert letter["error"] == "TimeoutError"
        assert "gave up after 2 attempts" in letter["message"]
        assert letter["attempts"] == 2
        assert letter["first_attempt"] <= letter["last_attempt"]
        assert letter["position"]["line"] == letter["record"]["id"] + 1  # the header is line 1


def test_hanging_records_over_max_failures_fail_the_run(write) -> None:
    """With the default max_failures (0), the timed-out records fail the run: exit 1, and the
    summary still accounts for every record."""
    summary, _ = run_pipeline(write, HANG_STEP, expect_code=1)
    assert summary["status"] == "failed"
    assert "max_failures" in summary["reason"]
    assert summary["records_dead"] == len(HANGING)


def test_retry_signal_delays_and_retries(write) -> None:
    """A step raising Retry(delay=0.2) on a record's first attempt gets it retried: every record
    reaches the output, and the summary counts the retries."""
    summary, output = run_pipeline(write, "{use: python, function: 'funcs:retry_signal'}")
    assert summary["status"] == "ok"
    retried = [i for i in range(1, RECORDS + 1) if i % 5 == 0]
    assert summary["steps"][0]["retries"] == len(retried)
    rows = read_jsonl(output)
    assert sorted(r["id"] for r in rows) == list(range(1, RECORDS + 1))
    assert {r["id"]: r["attempts"] for r in rows} == {
        i: 2 if i in retried else 1 for i in range(1, RECORDS + 1)}


@pytest.mark.parametrize("executor", [
    "thread",
    "async",
    "process",
])
def test_sync_function_retried_in_its_thread(write, executor: str) -> None:
    """A sync function failing once per record with ConnectionError is retried in place:
    every record reaches the output, each retry is counted."""
    step = (f"{{use: python, function: 'funcs:flaky_sync', executor: {executor}, "
            "retry: {attempts: 3, base: 1ms, cap: 5ms}}")
    summary, output = run_pipeline(write, step)
    assert summary["status"] == "ok"
    assert summary["records_dead"] == 0
    assert summary["steps"][0]["retries"] == RECORDS
    rows = read_jsonl(output)
    assert sorted(r["id"] for r in rows) == list(range(1, RECORDS + 1))
    assert all(r["ok"] for r in rows)


def test_rate_limited_step_completes(write) -> None:
    """rate_limit: 20/s on an async function over 30 records: the run succeeds, nothing lost."""
    summary, output = run_pipeline(
        write, "{use: python, function: 'funcs:quick', rate_limit: 20/s}", records=30)
    assert summary["status"] == "ok"
    assert summary["records_out"] == 30
    assert sorted(r["id"] for r in read_jsonl(output)) == list(range(1, 31))
