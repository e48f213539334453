"""Hostile bytes into the CSV and JSONL sources: every non-blank line is accounted for, as a
record or a dead letter, and nothing but headrace's own errors ever escapes."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.config import load_pipeline
from headrace.engine import Runner, build_plan

LINE_PARTS = st.sampled_from([b"1", b"22", b"-3", b"4.5", b"abc", b'"q"', b'"open', b"\xff\xfe",
                              b"\x00", b" ", b"", b"\r", b"{", b"}", b'{"a": 1}', b"[1,",
                              b'"a":', b"null", b"\xc3\xa9"])
lines_strategy = st.lists(
    st.lists(LINE_PARTS, max_size=5).map(b",".join), max_size=30
)


def run(tmp_path: Path, use: str, content: bytes, header: bytes) -> dict[str, int]:
    (tmp_path / "in.txt").write_bytes(header + content)
    (tmp_path / "p.yaml").write_text(
        f"version: 1\nname: fuzz\nsource: {{use: {use}, path: in.txt, block_size: 4096}}\n"
        "sink: {use: jsonl, path: out.jsonl}\nruntime: {loop: asyncio, max_failures: 100%}\n")
    result = anyio.run(Runner(build_plan(load_pipeline(tmp_path / "p.yaml"))).run, False)
    assert result.error is None, result.summary
    return result.summary


def record_lines(content: bytes) -> int:
    return sum(1 for line in content.split(b"\n") if line.strip(b"\r"))


@pytest.mark.parametrize(("use", "header"), [("csv", b"a,b,c\n"), ("jsonl", b"")])
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines_strategy)
def test_every_line_is_a_record_or_a_dead_letter(tmp_path: Path, use: str, header: bytes,
                                                 lines) -> None:  # type: ignore[no-untyped-def]
    """records_in equals the non-blank lines after any header; out + dead covers them all."""
    content = b"\n".join(lines) + b"\n"
    summary = run(tmp_path, use, content, header)
    assert summary["records_in"] == record_lines(content)
    assert summary["records_in"] == summary["records_out"] + summary["records_dead"]
