"""The ``example-ndjson`` sink: newline-delimited JSON, published atomically, resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, ClassVar

import anyio
from pydantic import Field

from headrace.errors import SinkError
from headrace.plugin import Batch, Options, PluginContext, Sink


class NdjsonOptions(Options):
    path: str = Field(description="Output file, relative to the pipeline file.")
    fields: list[str] | None = Field(
        default=None, min_length=1, description="Only these columns, in this order (default: all)."
    )


def _json_default(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class NdjsonSink(Sink):
    """Appends to ``.NAME.partial`` next to the output and renames it to ``NAME`` in
    ``finish``: a failed run leaves no half-written file under the final name. A checkpoint
    flushes and fsyncs the partial file and remembers its length; a resumed run cuts the file
    back to that length, so records written after the checkpoint are not there twice."""

    summary = "newline-delimited JSON file, written atomically, resumable"
    Options: ClassVar[type[NdjsonOptions]] = NdjsonOptions
    options: NdjsonOptions
    example: ClassVar[dict[str, Any] | None] = {"path": "out/example.ndjson"}
    atomic = True  # temporary name + rename in finish(), deleted in abort()
    idempotent = True  # a resume truncates to the checkpoint: a replay adds no duplicates
    resumable = True  # checkpoint() and resume() below

    def __init__(self, options: NdjsonOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.final = context.resolve_path(options.path)
        self.temp = self.final.with_name(f".{self.final.name}.partial")
        self._file: IO[bytes] | None = None
        self._done = False

    def describe(self) -> str:
        return str(self.final)

    # Blocking file work runs in a worker thread: the event loop keeps moving batches.
    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    async def write(self, batch: Batch) -> None:
        await anyio.to_thread.run_sync(self._write, batch)

    async def checkpoint(self) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self._checkpoint)

    async def resume(self, state: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self._resume, state)

    async def finish(self) -> None:
        if not self._done:
            await anyio.to_thread.run_sync(self._finish)

    async def abort(self) -> None:
        if not self._done:
            await anyio.to_thread.run_sync(self._abort)

    async def close(self) -> None:  # always runs; after a failure, abort() may follow it
        await anyio.to_thread.run_sync(self._close_file)

    # -- in a worker thread -------------------------------------------------------------
    def _open(self) -> None:
        if self.final.is_dir():
            raise SinkError(f"{self.final} is a directory; the sink needs a file path")
        self.final.parent.mkdir(parents=True, exist_ok=True)

    def _handle(self) -> IO[bytes]:
        if self._file is None:  # a fresh run: replace whatever partial file was there
            self._file = open(self.temp, "wb")  # noqa: SIM115 - closed in _close_file
        return self._file

    def _write(self, batch: Batch) -> None:
        table = batch.to_arrow()
        if self.options.fields is not None:
            missing = [f for f in self.options.fields if f not in table.column_names]
            if missing:
                raise SinkError(f"{self.context.where('fields')}: no column {missing[0]!r} "
                                f"in the records ({', '.join(table.column_names)})")
            table = table.select(self.options.fields)
        lines = [json.dumps(row, default=_json_default, ensure_ascii=False) + "\n"
                 for row in table.to_pylist()]
        self._handle().write("".join(lines).encode("utf-8"))

    def _checkpoint(self) -> dict[str, Any]:
        handle = self._handle()
        handle.flush()
        os.fsync(handle.fileno())
        return {"bytes": handle.tell()}

    def _resume(self, state: dict[str, Any]) -> None:
        if state.get("publishing") and not self.temp.exists() and self.final.exists():
            self._done = True  # the killed run had renamed the file already
            return
        if "bytes" not in state:
            return  # a fresh run (no checkpoint yet): start from an empty file
        try:
            handle = open(self.temp, "r+b")  # noqa: SIM115 - closed in _close_file
        except FileNotFoundError:
            raise SinkError(f"cannot resume: the partial output {self.temp} is gone",
                            hint="run without --resume to start over") from None
        handle.truncate(int(state["bytes"]))  # drop what was written after the checkpoint
        handle.seek(0, os.SEEK_END)
        self._file = handle

    def _finish(self) -> None:
        handle = self._handle()  # no records: an empty file
        handle.flush()
        os.fsync(handle.fileno())
        self._close_file()
        os.replace(self.temp, self.final)
        _fsync_dir(self.final.parent)  # the rename itself survives a power cut
        self._done = True

    def _abort(self) -> None:
        self._close_file()
        # With checkpoints the partial file waits for `headrace run --resume`.
        if not self.checkpointing:
            self.temp.unlink(missing_ok=True)

    def _close_file(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            handle.close()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
