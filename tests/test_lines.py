"""The line-block reader: whatever the block size, blocks hold whole lines, in order, with the
right first line numbers and offsets; over-long lines are skipped and reported."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.builtins._lines import LineReader
from headrace.errors import SourceError

# Lines are short (under any block), or far longer than max_line_bytes + a block: the limit
# is enforced at block granularity, so lengths in between may go either way by design.
LONG = 150_000
# Drawn as small specs (a long line's repr would be 150 kB), made into bytes in the test.
line_specs = st.lists(
    st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"x")),
              st.integers(0, 4000), st.just("long")),
    max_size=40,
)


def make_line(spec: bytes | int | str) -> bytes:
    if spec == "long":
        return b"L" * LONG
    return b"M" * spec if isinstance(spec, int) else spec  # type: ignore[return-value]


def read_all(path: Path, block_size: int, max_line: int, header: bool = False):  # type: ignore[no-untyped-def]
    reader = LineReader(path, None, block_size, max_line)
    reader.open()
    try:
        first = reader.read_line() if header else None
        blocks = []
        while (block := reader.next_block()) is not None:
            blocks.append(block)
        return first, blocks
    finally:
        reader.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=line_specs, trailing=st.booleans(), block=st.sampled_from([4096, 5000, 65536]),
       header=st.booleans())
def test_blocks_reassemble_the_input(tmp_path: Path, specs, trailing, block, header) -> None:  # type: ignore[no-untyped-def]
    """Concatenated blocks (plus skipped long lines) are the file; line numbers add up."""
    lines = [make_line(spec) for spec in specs]
    max_line = 12_000
    content = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    if header and lines and len(lines[0]) == LONG:
        with pytest.raises(SourceError, match="first line exceeds"):
            read_all(path, block, max_line, header)
        return
    first, blocks = read_all(path, block, max_line, header)
    expected_lines = content.split(b"\n") if content else []
    if content.endswith(b"\n"):
        expected_lines.pop()
    if header:
        expected_lines = expected_lines[1:]
    seen: list[bytes] = []
    line_no = 2 if header else 1
    for block_ in blocks:
        for dead in block_.oversized:
            assert dead.row_id == line_no
            assert dead.error == "LineTooLong"
            seen.append(b"<long>")
            line_no += 1
        assert block_.first_line == line_no
        data = bytes(block_.data)
        got = data.split(b"\n") if data else []
        if data.endswith(b"\n"):
            got.pop()
        assert block_.line_count == len(got)
        seen.extend(got)
        line_no += len(got)
    want = [b"<long>" if len(x) == LONG else x for x in expected_lines]
    assert seen == want
    if header and content:
        assert first == content.split(b"\n")[0]


def test_offsets_are_contiguous(tmp_path: Path) -> None:
    """Each block starts where the previous ended; the last ends at the file size."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"".join(f"{i},{'x' * (i % 50)}\n".encode() for i in range(20000)))
    _, blocks = read_all(path, 4096, 65536)
    assert blocks[0].start == 0
    for before, after in itertools.pairwise(blocks):
        assert after.start == before.end
    assert blocks[-1].end == path.stat().st_size
