"""Reading text inputs in blocks of whole lines, with line numbers and byte offsets.

Blocks end at a newline, so a block parses on its own; each knows its first line number and
byte range (the source position that dead letters and checkpoints use). A line longer than
``max_line_bytes`` is skipped while streaming, never buffered whole, and reported.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from headrace.errors import SourceError
from headrace.plugin import DeadRecord

COMPRESSION_BY_SUFFIX = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd",
                         ".bz2": "bz2"}


def compression_for(path: str, option: str) -> str | None:
    if option != "auto":
        return None if option == "none" else option
    return COMPRESSION_BY_SUFFIX.get(Path(path).suffix.lower())


def _newline_mask(data: bytes | bytearray) -> np.ndarray:
    # numpy scans without holding the GIL, unlike bytes.count / bytes.find
    return np.frombuffer(data, dtype=np.uint8) == 10


def _count_line_ends(data: bytes) -> tuple[int, int]:
    """Newlines and carriage returns, in 256 KiB slices (the temporaries stay in cache)."""
    view = np.frombuffer(data, dtype=np.uint8)
    step = 1 << 18
    newlines = returns = 0
    for i in range(0, len(view), step):
        piece = view[i: i + step]
        newlines += int(np.count_nonzero(piece == 10))
        returns += int(np.count_nonzero(piece == 13))
    return newlines, returns


def _crlf_pairs(data: bytes) -> int:
    view = np.frombuffer(data, dtype=np.uint8)
    return int(np.count_nonzero((view[:-1] == 13) & (view[1:] == 10)))


@dataclass
class LineBlock:
    """Whole lines of input. ``data`` may be a bytearray: it is only read, never kept."""

    data: bytes
    first_line: int
    start: int
    end: int
    oversized: list[DeadRecord] = field(default_factory=list)
    line_count: int = -1
    returns: int = 0

    def __post_init__(self) -> None:
        if self.line_count < 0:
            tail = 1 if self.data and not self.data.endswith(b"\n") else 0
            newlines, self.returns = _count_line_ends(self.data)
            self.line_count = newlines + tail

    @property
    def has_bare_returns(self) -> bool:
        """A carriage return not followed by a newline: CSV parsers end a record there."""
        return self.returns > 0 and _crlf_pairs(self.data) != self.returns

    def record_lines(self) -> np.ndarray:
        """Line numbers of the lines that hold records, i.e. all but blank ones."""
        return self.record_spans()[0]

    def record_spans(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Line numbers of the lines that hold records, and where each starts and ends in
        ``data`` (its newline excluded)."""
        if self.line_count == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        ends = np.flatnonzero(_newline_mask(self.data))
        if self.data and not self.data.endswith(b"\n"):
            ends = np.append(ends, len(self.data))
        starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
        lengths = ends - starts
        view = np.frombuffer(self.data, dtype=np.uint8)
        lone_cr = (lengths == 1) & (view[np.maximum(ends - 1, 0)] == 13) if len(ends) else lengths
        kept = np.flatnonzero(~((lengths == 0) | lone_cr))
        return self.first_line + kept, starts[kept], ends[kept]


STDIN_POLL = 0.1  # seconds between checks for a stop while standard input is silent


class PolledInput:
    """A pipe (standard input) read so that a stop is seen within ``STDIN_POLL`` seconds
    even when no more input comes: the read then ends as the input would. A blocking read
    of a silent pipe cannot be cancelled, and would keep a stopped run waiting for input."""

    closed = False  # file-like enough for pyarrow's decompressing streams

    def __init__(self, fd: int, stopping: Callable[[], bool]) -> None:
        self.fd = fd
        self.stopping = stopping
        self.ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Fill ``buffer`` like a blocking read, but hand over what came once the input
        pauses for ``STDIN_POLL`` seconds, and stop reading (0: the end) once a stop is asked
        for, also while input keeps trickling in."""
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view) and not self.ended and not self.stopping():
            ready, _, _ = select.select([self.fd], [], [], STDIN_POLL)
            if not ready:
                if got:
                    break
                continue
            count = os.readv(self.fd, [view[got:]])
            self.ended = count == 0
            got += count
        return got

    def read(self, size: int = -1) -> bytes:
        buffer = bytearray(size if size >= 0 else 1 << 20)
        return bytes(buffer[: self.readinto(buffer)])

    def close(self) -> None:
        """Standard input is the process's: left open."""


class LineReader:
    """Blocking reader; run its methods in a worker thread."""

    def __init__(self, path: Path | None, compression: str | None, block_size: int,
                 max_line_bytes: int, stopping: Callable[[], bool] = lambda: False) -> None:
        self.path = path
        self.stopping = stopping
        self.compression = compression
        self.block_size = block_size
        self.max_line_bytes = max_line_bytes
        self._raw: IO[bytes] | None = None
        self._stream: Any = None
        self._carry = b""
        self._line = 1
        self._offset = 0
        self._eof = False
        self._spare: list[bytearray] = []
        self._spare_lock = threading.Lock()

    @property
    def label(self) -> str:
        return str(self.path) if self.path else "<stdin>"

    def open(self) -> None:
        try:
            self._raw = (open(self.path, "rb") if self.path  # noqa: SIM115
                         else PolledInput(sys.stdin.fileno(), self.stopping))  # type: ignore[assignment]
        except FileNotFoundError:
            raise SourceError(f"{self.label}: no such file") from None
        except OSError as exc:
            raise SourceError(f"{self.label}: cannot open: {exc.strerror or exc}") from None
        self._stream = (
            pa.CompressedInputStream(self._raw, self.compression) if self.compression else self._raw
        )

    def close(self) -> None:
        if self._raw is not None and self.path is not None:
            self._raw.close()
        self._raw = None

    def seek(self, offset: int, line: int) -> None:
        """Continue at byte ``offset`` (of the decompressed input) which starts line ``line``."""
        if self.compression or self.path is None:
            skip = offset - self._offset - len(self._carry)
            while skip > 0:  # a compressed stream can only be read forward
                chunk = self._read(min(skip, self.block_size))
                if not chunk:
                    raise SourceError(f"{self.label}: input ends before byte {offset}")
                skip -= len(chunk)
        else:
            assert self._raw is not None
            self._raw.seek(offset)
        self._carry, self._offset, self._line, self._eof = b"", offset, line, False

    def raw_position(self) -> int:
        try:
            return self._raw.tell() if self._raw is not None and self.path else self._offset
        except (OSError, ValueError):
            return self._offset

    def _read(self, size: int) -> bytes:
        try:
            return bytes(self._stream.read(size))
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.label}: read failed near byte {self._offset}: {exc}") from exc

    def release(self, data: bytes) -> None:
        """Take back a block's buffer once it is parsed, to read the next one into: fresh
        8 MiB buffers cost page faults, about a second of CPU per GB."""
        if isinstance(data, bytearray):
            with self._spare_lock:
                if len(self._spare) < 4:
                    self._spare.append(data)

    def read_line(self) -> bytes | None:
        """The next line (without its newline), e.g. a CSV header; None at end of input."""
        while b"\n" not in self._carry and not self._eof:
            chunk = self._read(min(64 * 1024, self.block_size))
            if not chunk:
                self._eof = True
            self._carry += chunk
            if len(self._carry) > self.max_line_bytes and b"\n" not in self._carry:
                raise SourceError(f"{self.label}:{self._line}: first line exceeds max_line_bytes")
        if not self._carry:
            return None
        line, sep, rest = self._carry.partition(b"\n")
        self._carry = rest
        self._offset += len(line) + len(sep)
        self._line += 1
        return line

    def next_block(self) -> LineBlock | None:
        """The next run of whole lines (about ``block_size`` bytes); None at end of input."""
        oversized: list[DeadRecord] = []
        while True:
            if self._eof and not self._carry:
                return LineBlock(b"", self._line, self._offset, self._offset, oversized) \
                    if oversized else None
            first_line, start = self._line, self._offset
            data: bytes | None = None
            cut = self._carry.rfind(b"\n")
            if cut >= 0:  # left over from read_line: whole lines are a block already
                data, self._carry = self._carry[: cut + 1], self._carry[cut + 1:]
            if data is None and not self._eof:
                data = self._read_block()
            parts, size = [self._carry], len(self._carry)
            if data is None:
                self._carry = b""
            while data is None:
                chunk = b"" if self._eof else self._read(self.block_size)
                if not chunk:
                    self._eof = True
                    if size > self.max_line_bytes:  # the last line, without a newline
                        oversized.append(self._long_line(parts, size))
                        break
                    data = b"".join(parts)
                    break
                first = chunk.find(b"\n")
                if first >= 0 and size + first > self.max_line_bytes:
                    oversized.append(self._long_line(parts, size + first + 1))
                    self._carry = chunk[first + 1:]
                    break
                if first >= 0:
                    cut = chunk.rfind(b"\n")
                    parts.append(chunk[: cut + 1])
                    self._carry = chunk[cut + 1:]
                    data = b"".join(parts)
                    break
                # No newline since the last one: ``parts`` is a single, still growing line.
                parts.append(chunk)
                size += len(chunk)
                if size > self.max_line_bytes:
                    oversized.append(self._long_line(parts, size + self._skip_rest_of_line()))
                    break
            if data is None:
                continue
            self._offset += len(data)
            block = LineBlock(data, first_line, start, self._offset, oversized)
            self._line += block.line_count
            if data or oversized:
                return block

    def _read_block(self) -> bytes | None:
        """Fast path: carry + one read, cut at the last newline, in one buffer (no joins).

        Returns None when that read holds no newline (a line longer than a block); what it
        read is then kept as the carry, for the slow path to extend.
        """
        carry = self._carry
        # Blocks span ``block_size`` bytes from where they start, carry included, so a run
        # resumed at a block's end cuts the rest of the input exactly as an uninterrupted
        # one (then batches, and the dead letters' order past a regrouping step, match).
        room = self.block_size - len(carry) if len(carry) < self.block_size else self.block_size
        need = len(carry) + room
        with self._spare_lock:
            buffer = self._spare.pop() if self._spare else bytearray(need)
        if len(buffer) < need:
            buffer.extend(bytes(need - len(buffer)))
        buffer[: len(carry)] = carry
        view = memoryview(buffer)
        try:
            got = self._stream.readinto(view[len(carry):])
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.label}: read failed near byte {self._offset}: {exc}") from exc
        finally:
            view.release()
        filled = len(carry) + (got or 0)
        if not got:
            self._eof = True
            del buffer[filled:]
            self._carry = b""
            return buffer  # type: ignore[return-value]  # read-only use, like bytes
        cut = buffer.rfind(b"\n", 0, filled)
        if cut < 0:
            self._carry = bytes(buffer[:filled])
            return None
        self._carry = bytes(buffer[cut + 1: filled])
        del buffer[cut + 1:]
        return buffer  # type: ignore[return-value]

    def _long_line(self, parts: list[bytes], total: int) -> DeadRecord:
        """Report a line of ``total`` bytes (newline included) that was not kept."""
        prefix = b"".join(part[:1024] for part in parts[:1024])[:1024]  # no copy of it all
        dead = DeadRecord(
            {"line_prefix": prefix.decode("utf-8", "replace")},
            "LineTooLong",
            f"line of {total} bytes exceeds max_line_bytes ({self.max_line_bytes})",
            self._line,
        )
        self._offset += total
        self._line += 1
        return dead

    def _skip_rest_of_line(self) -> int:
        skipped = 0
        while True:
            chunk = self._read(self.block_size)
            if not chunk:
                self._eof = True
                return skipped
            cut = chunk.find(b"\n")
            if cut >= 0:
                self._carry = chunk[cut + 1:]
                return skipped + cut + 1
            skipped += len(chunk)



def split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines
