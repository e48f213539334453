"""``download`` step and sink: stream response bodies into files under one directory.

Each body streams to ``.<name>.<row>.part`` beside its final name, in chunks (memory per
download stays under ``FLUSH_BYTES``), is checked against an expected checksum if one is
given, fsynced, and renamed: a file under its final name is always complete. So a resumed run
skips files that exist (``overwrite: false``), and a killed one leaves only ``.part`` files,
which the next attempt at the same record overwrites.

File names come from the ``name`` template (or the URL's last segment); values from data can
never add a directory level or leave ``dir`` (``_names``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import anyio
from pydantic import Field, field_validator
from yarl import URL

from headrace.config import ByteSize, Duration
from headrace.errors import ConfigValueError
from headrace.plugin import (
    Batch,
    DeadRecord,
    PluginContext,
    Sink,
    StepOutput,
    TransientError,
    collect_results,
    dead_record,
)

from ._client import (
    TRANSIENT_ERRORS,
    HttpClient,
    HttpOptions,
    RecordRequestStep,
    Request,
    ResponseTooLarge,
    display_url,
)
from ._names import check_name_template, name_from_url, render_name, resolve_under
from ._template import MissingField, TemplateError, UrlTemplate

FLUSH_BYTES = 1 << 18  # buffered per download before a write (in a thread)
CHUNK = 1 << 16
_TEMP_NAME_ROOM = 200  # bytes of the final name kept in a temp name (+ row, dots, .part)


class ChecksumMismatch(TransientError):
    """The bytes received do not hash to the expected value (a transfer may have been cut)."""


class DownloadOptions(HttpOptions):
    url: str = Field(default="{url}", description="URL template (default: the url field).")
    dir: str = Field(description="Output directory, relative to the pipeline file.")
    name: str | None = Field(
        default=None, description="File name template, e.g. '{id}.bin' or '{kind}/{id}.json' "
        "(default: the URL's last path segment).")
    overwrite: bool = Field(
        default=False, description="false: a file already complete under its name is kept "
        "and not fetched again (what makes a resumed run cheap).")
    checksum_header: str | None = Field(
        default=None, description="Response header with the expected SHA-256 (hex).")
    checksum_field: str | None = Field(
        default=None, description="Record field with the expected SHA-256 (hex).")
    into: str = Field(default="download", description="Field that receives {path, bytes, "
                      "sha256, skipped} (step only).")
    fsync: bool = Field(default=True, description="fsync each file before renaming it.")
    max_response_bytes: ByteSize = Field(default=4 * 1024**3, ge=1,
                                         description="Larger bodies are an error.")
    read_timeout: Duration | None = Field(
        default=30.0, gt=0, le=86400,
        description="Longest wait for the next bytes: a stalled transfer is retried.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None:
            check_name_template(value)
        return value


class Downloader:
    """What the step and the sink share: one client, one directory."""

    def __init__(self, options: DownloadOptions, context: PluginContext) -> None:
        self.options = options
        self.context = context
        try:
            self.url = UrlTemplate.compile(options.url)
        except TemplateError as exc:
            raise ConfigValueError(f"{context.where('url')}: url: {exc}") from None
        self.root = context.resolve_path(options.dir)
        # No overall deadline: a large file takes as long as it takes, while read_timeout
        # still catches a stalled transfer.
        self.client = HttpClient(options, context, total_timeout=None)
        self._active: dict[Path, anyio.Event] = {}
        self.fields = {f.split(".")[0] for f in self.url.template.fields}
        if options.checksum_field:
            self.fields.add(options.checksum_field)

    async def open(self) -> None:
        try:
            await anyio.Path(self.root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigValueError(f"{self.context.where('dir')}: cannot create {self.root}: "
                                   f"{exc.strerror or exc}") from None
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    def _target_name(self, record: dict[str, Any], url: str) -> str:
        if self.options.name is None:
            return name_from_url(url)
        try:
            return render_name(self.options.name, record)
        except KeyError as exc:
            raise MissingField(exc.args[0]) from None

    def _prepare(self, relative: str) -> Path:
        """The final path (checked inside the root), with its directory made. In a thread."""
        target = resolve_under(self.root, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        return resolve_under(self.root, relative)  # again: a symlinked directory is refused

    async def fetch(self, record: dict[str, Any], row: int | None) -> dict[str, Any]:
        """Download ``record``'s URL; the download's description, or an exception."""
        url = self.url.render(record)
        relative = self._target_name(record, url)
        target = await anyio.to_thread.run_sync(self._prepare, relative)
        while (busy := self._active.get(target)) is not None:
            await busy.wait()  # the same file from another record: let it finish first
        # Claimed before the next await: a record for the same file arriving meanwhile waits
        # (checking for the file first let two records both claim it).
        self._active[target] = anyio.Event()
        try:
            if not self.options.overwrite and await anyio.Path(target).is_file():
                size = (await anyio.Path(target).stat()).st_size
                return {"path": relative, "bytes": size, "sha256": None, "skipped": True}
            expected = None
            if self.options.checksum_field:
                expected = str(record.get(self.options.checksum_field) or "").lower() or None
            temp = target.with_name(_temp_name(target.name, row))
            request = Request("GET", URL(url, encoded=False), from_data=self.url.from_data)

            async def consume(response: aiohttp.ClientResponse) -> tuple[int, str]:
                header = None
                if self.options.checksum_header:
                    header = response.headers.get(self.options.checksum_header)
                return await self._stream(response, temp, target,
                                          expected or (header.lower() if header else None))

            try:
                reply = await self.client.call(request, consume=consume)
            finally:
                await anyio.Path(temp).unlink(missing_ok=True)
            size, digest = reply.body
            return {"path": relative, "bytes": size, "sha256": digest, "skipped": False}
        finally:
            self._active.pop(target).set()

    async def _stream(self, response: aiohttp.ClientResponse, temp: Path, target: Path,
                      expected: str | None) -> tuple[int, str]:
        cap = self.options.max_response_bytes
        length = response.content_length
        if length is not None and length > cap:
            raise ResponseTooLarge(f"{display_url(response.url)} is {length} bytes, over "
                                   f"max_response_bytes ({cap})")
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        buffered = 0
        handle = await anyio.to_thread.run_sync(open, temp, "wb")
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > cap:
                    raise ResponseTooLarge(f"{display_url(response.url)} is over "
                                           f"max_response_bytes ({cap})")
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= FLUSH_BYTES:
                    await anyio.to_thread.run_sync(_write, handle, digest, pending)
                    pending, buffered = [], 0
            await anyio.to_thread.run_sync(_write, handle, digest, pending)
            if self.options.fsync:
                await anyio.to_thread.run_sync(os.fsync, handle.fileno())
        finally:
            await anyio.to_thread.run_sync(handle.close)
        hexdigest = digest.hexdigest()
        if expected is not None and hexdigest != expected:
            raise ChecksumMismatch(f"{display_url(response.url)}: SHA-256 {hexdigest} is not "
                                   f"the expected {expected}")
        await anyio.to_thread.run_sync(os.replace, temp, target)
        return size, hexdigest


def _temp_name(name: str, row: int | None) -> str:
    """``.<name>.<row>.part``, within the 255 bytes a file name may have: a final name near
    that limit (``_names`` allows it) is replaced by its hash here."""
    if len(name.encode()) > _TEMP_NAME_ROOM:
        name = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return f".{name}.{row if row is not None else 0}.part"


def _write(handle: Any, digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        handle.write(chunk)


async def download_all(downloader: Downloader, batch: Batch) -> list[Any]:
    """Each record's outcome (a description or an exception), ``max_in_flight`` at a time."""
    rows = batch.to_rows()
    results: list[Any] = [None] * len(rows)
    indexes = iter(range(len(rows)))

    async def worker() -> None:
        for i in indexes:
            try:
                results[i] = await downloader.fetch(rows[i], batch.row_id(i))
            except Exception as exc:  # the record's own failure: it becomes a dead letter
                results[i] = exc

    async with anyio.create_task_group() as tg:
        for _ in range(min(downloader.options.max_in_flight, len(rows))):
            tg.start_soon(worker)
    return results


class DownloadStep(RecordRequestStep):
    """Downloads each record's URL to a file; adds where it went."""

    summary = "stream each record's URL to a file under a directory (safe names, checksums)"
    Options: ClassVar[type[DownloadOptions]] = DownloadOptions
    options: DownloadOptions

    def __init__(self, options: DownloadOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.downloader = Downloader(options, context)

    async def open(self) -> None:
        await self.downloader.open()

    async def close(self) -> None:
        await self.downloader.close()

    async def process_async(self, batch: Batch) -> StepOutput:
        results = await download_all(self.downloader, batch)
        rows = batch.to_rows()
        into = self.options.into
        merged = [({**rows[i], into: r} if isinstance(r, dict) else r)
                  for i, r in enumerate(results)]
        return collect_results(batch, rows, merged, "download")


class DownloadSink(Sink):
    """Downloads each record's URL to a file; records that fail are dead letters."""

    summary = "stream each record's URL to a file under a directory (safe names, checksums)"
    Options: ClassVar[type[DownloadOptions]] = DownloadOptions
    options: DownloadOptions
    resumable = True  # every file is complete once write() returns; resume skips them
    idempotent = True
    applies_policy = True
    transient_errors = TRANSIENT_ERRORS

    def __init__(self, options: DownloadOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.downloader = Downloader(options, context)

    async def open(self) -> None:
        await self.downloader.open()

    async def close(self) -> None:
        await self.downloader.close()

    async def write(self, batch: Batch) -> list[DeadRecord] | None:
        results = await download_all(self.downloader, batch)
        rows = batch.to_rows()
        return [dead_record(rows[i], r, batch.row_id(i))
                for i, r in enumerate(results) if isinstance(r, BaseException)]

    async def checkpoint(self) -> dict[str, Any]:
        return {}

    async def resume(self, state: dict[str, Any]) -> None:
        return None

    def describe(self) -> str:
        return str(self.downloader.root)
