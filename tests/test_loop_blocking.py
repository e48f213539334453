"""The event loop never blocks: file sources and sinks, downloads and HTTP calls do their
blocking work in threads. The loop watchdog (``runtime.loop_block_warning``) is the probe,
and is itself tested on a function that does block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headrace.sampledata import write_flights_csv

from .conftest import demo_api, run_cli

BLOCKER = '''
import time

async def enrich(record):
    if record["id"] == 3:
        time.sleep(1.0)  # blocks the event loop
    return record
'''


def _run(pipeline: Path) -> tuple[dict[str, Any], str]:
    result = run_cli("run", str(pipeline), "--json", timeout=300)
    assert result.code == 0, result.stderr
    return result.summary, result.stderr


def test_watchdog_names_the_code_that_blocks_the_loop(write: Any) -> None:
    write("blocker.py", BLOCKER)
    write("in.csv", "id\n1\n2\n3\n4\n")
    pipeline = write("p.yaml", """
        version: 1
        name: blocks
        source: {use: csv, path: in.csv}
        steps:
          - use: python
            function: blocker:enrich
        sink: {use: jsonl, path: out.jsonl}
        runtime: {loop_block_warning: 300ms}
    """)
    summary, stderr = _run(pipeline)
    stalls = summary["loop_stalls"]
    assert stalls["count"] == 1
    assert stalls["where"] == ["blocker.py:5 in enrich()"]
    assert "event loop was blocked" in stderr and "blocker.py:5 in enrich()" in stderr


def test_files_downloads_and_http_calls_leave_the_loop_free(write: Any, tmp_path: Path) -> None:
    """A 64 MiB download (fsynced), 2,000 small ones, 3,000 API calls, and CSV -> Parquet of
    300k rows: no stall of 0.5 s. (A blocking write or parse of this size takes longer.)"""
    write_flights_csv(tmp_path / "flights.csv", rows=300_000)
    names = "".join(f"file-{i:05d}.bin\n" for i in range(1, 2001))
    write("files.csv", "name\n" + names + "67108864.bin\n")
    write("zips.csv", "id,zip\n" + "".join(f"{i},{i * 31 % 100000:05d}\n"
                                         for i in range(3000)))
    with demo_api("--files", "2000", "--seed", "3") as base:
        pipelines = [
            write("convert.yaml", """
                version: 1
                name: convert
                source: {use: csv, path: flights.csv}
                sink: {use: parquet, path: flights.parquet}
            """),
            write("download.yaml", f"""
                version: 1
                name: download
                source: {{use: csv, path: files.csv}}
                sink:
                  use: download
                  url: "{base}/files/{{name}}"
                  dir: files
                  name: "{{name}}"
                  checksum_header: X-Checksum-Sha256
            """),
            write("enrich.yaml", f"""
                version: 1
                name: enrich
                source: {{use: csv, path: zips.csv, types: {{zip: string}}}}
                steps:
                  - use: http
                    url: "{base}/geo"
                    params: {{zip: "{{zip}}"}}
                    into: geo
                sink: {{use: parquet, path: geo.parquet}}
            """),
        ]
        for pipeline in pipelines:
            summary, stderr = _run(pipeline)
            assert summary["status"] == "ok"
            assert "loop_stalls" not in summary, (pipeline.name, summary["loop_stalls"])
            assert "event loop was blocked" not in stderr
    assert (tmp_path / "files" / "67108864.bin").stat().st_size == 67108864


@pytest.mark.parametrize("value", ["0", "-1s", "soon"])
def test_loop_block_warning_rejects_absurd_values(write: Any, value: str) -> None:
    write("in.csv", "id\n1\n")
    pipeline = write("p.yaml", f"""
        version: 1
        name: bad
        source: {{use: csv, path: in.csv}}
        sink: {{use: jsonl, path: out.jsonl}}
        runtime: {{loop_block_warning: "{value}"}}
    """)
    result = run_cli("validate", str(pipeline))
    assert result.code == 2
    assert "loop_block_warning" in result.stderr
