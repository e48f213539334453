"""The ``http`` sink: POST (or PUT/PATCH) records, one per request or in groups.

At-least-once: a batch whose requests ran is committed; one replayed after a crash is sent
again. Each request carries an ``Idempotency-Key`` derived from the input's identity (the
source's fingerprint) and its records' source ids: the same in every replay, new for other
input, so a receiver that dedupes on it sees each record once.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

import anyio
from pydantic import Field, model_validator
from yarl import URL

from headrace.errors import ConfigValueError, SinkError
from headrace.plugin import Batch, DeadRecord, PluginContext, RetriesExhausted, Sink, dead_record

from ._client import TRANSIENT_ERRORS, HttpClient, HttpOptions, Request
from ._template import MissingField, TemplateError, UrlTemplate, compile_value, render_value


class HttpSinkOptions(HttpOptions):
    url: str = Field(description="Where to send; a template per record when batch_size is 1.")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    body_json: Any = Field(default="{*}", alias="json",
                           description="JSON body template per record (default: the record).")
    batch_size: int = Field(default=1, ge=1, le=10_000,
                            description="Records per request; >1 sends a JSON list.")
    idempotency_header: str | None = Field(
        default="Idempotency-Key",
        description="Header carrying a key derived from the records' source ids; null: none.")

    @model_validator(mode="after")
    def _fixed_url_for_groups(self) -> HttpSinkOptions:
        if self.batch_size > 1 and "{" in self.url.replace("{{", ""):
            raise ValueError("batch_size > 1 sends many records to one URL: it cannot be a "
                             "template")
        return self


class HttpSink(Sink):
    """Sends records to an HTTP endpoint with an Idempotency-Key."""

    summary = "POST records (or groups of them) to an HTTP endpoint, with an Idempotency-Key"
    Options: ClassVar[type[HttpSinkOptions]] = HttpSinkOptions
    options: HttpSinkOptions
    resumable = True  # each write completes its requests; a replay reuses the same keys
    idempotent = True  # the server de-duplicates by Idempotency-Key
    applies_policy = True
    transient_errors = TRANSIENT_ERRORS

    def __init__(self, options: HttpSinkOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        try:
            self.url = UrlTemplate.compile(options.url)
            self.body = compile_value(options.body_json)
        except TemplateError as exc:
            raise ConfigValueError(f"{context.where('url')}: {exc}") from None
        self.client = HttpClient(options, context)
        self.sent = 0

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    async def checkpoint(self) -> dict[str, Any]:
        return {"sent": self.sent}

    async def resume(self, state: dict[str, Any]) -> None:
        self.sent = int(state.get("sent", 0))

    def describe(self) -> str:
        return self.url.template.source

    def _key(self, ids: list[int | None], bodies: list[Any]) -> str:
        """Stable across replays: from the pipeline, the input's identity and the records'
        source ids (or, without ids, the bodies themselves)."""
        h = hashlib.sha256(self.context.pipeline_name.encode())
        h.update(b"input:" + self.input_identity.encode())  # new data: new keys
        if all(i is not None for i in ids):
            h.update(b"ids:" + ",".join(str(i) for i in ids).encode())
        else:
            import orjson

            h.update(b"body:" + orjson.dumps(bodies, option=orjson.OPT_SORT_KEYS))
        return h.hexdigest()[:40]

    async def _send(self, members: list[int], rows: list[dict[str, Any]], batch: Batch,
                    bodies: list[Any]) -> None:
        ids = [batch.row_id(i) for i in members]
        single = self.options.batch_size == 1
        headers = dict(self.options.headers)
        if self.options.idempotency_header:
            headers[self.options.idempotency_header] = self._key(ids, bodies)
        url = self.url.render(rows[members[0]]) if single else self.url.template.source
        request = Request(self.options.method, URL(url, encoded=False), headers=headers,
                          json=bodies[0] if single else bodies, from_data=self.url.from_data)
        await self.client.call(request, "none")

    async def write(self, batch: Batch) -> list[DeadRecord] | None:
        rows = batch.to_rows()
        dead: list[DeadRecord] = []
        groups: list[tuple[list[int], list[Any]]] = []
        size = self.options.batch_size
        for start in range(0, len(rows), size):
            members, bodies = [], []
            for i in range(start, min(len(rows), start + size)):
                try:
                    bodies.append(render_value(self.body, rows[i]))
                    members.append(i)
                except MissingField as exc:
                    dead.append(dead_record(rows[i], exc, batch.row_id(i)))
            if members:
                groups.append((members, bodies))
        outage: list[BaseException] = []
        pending = iter(groups)

        async def worker() -> None:
            for members, bodies in pending:
                if outage:  # the endpoint is down: the rest waits for --resume, unsent
                    return
                try:
                    await self._send(members, rows, batch, bodies)
                    self.sent += len(members)
                except RetriesExhausted as exc:  # the endpoint is down: stop, resume later
                    outage.append(exc)
                except Exception as exc:  # refused for a reason of these records
                    dead.extend(dead_record(rows[i], exc, batch.row_id(i)) for i in members)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.options.max_in_flight, len(groups))):
                tg.start_soon(worker)
        if outage:
            raise SinkError(f"sink 'http' ({self.describe()}): {outage[0]}",
                            hint="resume with --resume once the endpoint is back")
        return sorted(dead, key=lambda d: -1 if d.row_id is None else d.row_id)
