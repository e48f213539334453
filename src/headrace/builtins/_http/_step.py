"""The ``http`` step: a request per record (or per group of records), the response merged in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import anyio
import pyarrow as pa
from pydantic import ConfigDict, Field, model_validator
from yarl import URL

from headrace.errors import ConfigValueError
from headrace.plugin import Batch, PluginContext, StepOutput, collect_results

from ._client import HttpClient, HttpOptions, RecordRequestStep, Reply, Request
from ._template import (
    MissingField,
    Template,
    TemplateError,
    UrlTemplate,
    compile_value,
    lookup,
    render_value,
    value_fields,
)

PENDING_PER_SLOT = 8  # records in progress (requesting or waiting to retry) per request slot
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


class HttpStepOptions(HttpOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str = Field(description="URL template: http://host/geo/{zip}, or {url} for a field "
                     "holding whole URLs (then checked as a destination from data).")
    method: Method = "GET"
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Query parameters; values are templates.")
    body_json: Any = Field(
        default=None, alias="json",
        description="JSON body template: strings are templates, \"{f}\" keeps f's type, "
        "\"{*}\" is the whole record.")
    body: str | None = Field(default=None, description="Text body template.")
    response: Literal["json", "text", "none"] = Field(
        default="json", description="How to read the response body.")
    into: str | None = Field(default=None, description="Field that receives the response.")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Fields from the JSON response: output field -> dotted path in it.")
    status_field: str | None = Field(default=None,
                                     description="Field that receives the HTTP status.")
    batch_size: int = Field(
        default=1, ge=1, le=10_000,
        description="Records per request: the body is a JSON list of the `json` template "
        "per record, the response a list of as many results, in order.")
    batch_response: str | None = Field(
        default=None, description="Dotted path to the results list in a batch response.")

    @model_validator(mode="after")
    def _consistent(self) -> HttpStepOptions:
        if self.body_json is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        if self.batch_size > 1 and (self.body_json is None or self.method == "GET"):
            raise ValueError("batch_size > 1 needs a json body and a method such as POST")
        if self.response == "none" and (self.into or self.fields):
            raise ValueError("response: none reads no body; drop into/fields")
        return self


def _compile(what: str, where: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except TemplateError as exc:
        raise ConfigValueError(f"{where}: {what}: {exc}") from None


class HttpStep(RecordRequestStep):
    """Calls an HTTP API for each record and adds the answer to it."""

    summary = "call an HTTP API per record (or per group); merge the response into the record"
    Options: ClassVar[type[HttpStepOptions]] = HttpStepOptions
    options: HttpStepOptions

    def __init__(self, options: HttpStepOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        where = context.where
        self.url = _compile("url", where("url"), UrlTemplate.compile, options.url)
        self.params = {k: _compile(f"params.{k}", where("params", k), Template.compile, str(v))
                       for k, v in options.params.items()}
        self.headers = {k: _compile(f"headers.{k}", where("headers", k), Template.compile, v)
                        for k, v in options.headers.items()}
        self.json = _compile("json", where("json"), compile_value, options.body_json)
        self.text = (None if options.body is None
                     else _compile("body", where("body"), Template.compile, options.body))
        # A URL without fields is parsed once, not per record.
        self._fixed_url = None if self.url.template.fields else URL(options.url)
        self.client = HttpClient(options, context)

    # -- validation -------------------------------------------------------------------------
    def fields_used(self) -> set[str]:
        used = {f.split(".")[0] for f in self.url.template.fields}
        for template in (*self.params.values(), *self.headers.values()):
            used |= {f.split(".")[0] for f in template.fields}
        used |= value_fields(self.json)
        if self.text is not None:
            used |= {f.split(".")[0] for f in self.text.fields}
        return used

    def output_schema(self, schema: pa.Schema) -> pa.Schema | None:
        missing = sorted(self.fields_used() - set(schema.names) - {"*"})
        if missing:
            raise ConfigValueError(
                f"{self.context.where('url')}: step '{self.context.plugin_id}' uses field "
                f"'{missing[0]}', which the input does not have",
                hint=f"fields available: {', '.join(schema.names)}")
        return None  # the response's shape is known only at run time

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    # -- requests -----------------------------------------------------------------------------
    def _request(self, record: dict[str, Any], body: Any = None) -> Request:
        headers = {k: t.render(record) for k, t in self.headers.items()} or None
        params = [(k, t.render(record)) for k, t in self.params.items()] or None
        data = self.text.render(record).encode() if self.text is not None else None
        json_body = body if body is not None else (
            render_value(self.json, record) if self.json is not None else None)
        url = self._fixed_url or URL(self.url.render(record), encoded=False)
        return Request(self.options.method, url, params=params, headers=headers,
                       json=json_body, data=data, from_data=self.url.from_data)

    def _merge(self, record: dict[str, Any], reply: Reply, result: Any) -> dict[str, Any]:
        options = self.options
        if options.into:
            record[options.into] = result
        for name, path in options.fields.items():
            try:
                record[name] = lookup(result, path) if isinstance(result, dict) else None
            except MissingField:
                record[name] = None
        if options.status_field:
            record[options.status_field] = reply.status
        return record

    async def _group(self, indexes: list[int], rows: list[dict[str, Any]],
                     results: list[Any]) -> None:
        bodies: list[Any] = []
        members: list[int] = []
        for i in indexes:  # a record that cannot be rendered fails alone
            try:
                bodies.append(render_value(self.json, rows[i]))
                members.append(i)
            except MissingField as exc:
                results[i] = exc
        if not members:
            return
        try:
            reply = await self.client.call(self._request(rows[members[0]], bodies),
                                           self.options.response)
            answers = reply.body
            if self.options.batch_response:
                answers = lookup(answers, self.options.batch_response)
            if not isinstance(answers, list) or len(answers) != len(members):
                got = len(answers) if isinstance(answers, list) else type(answers).__name__
                raise ValueError(f"batch response has {got} results for "
                                 f"{len(members)} records")
        except Exception as exc:
            for i in members:
                results[i] = exc
            return
        for i, answer in zip(members, answers, strict=True):
            results[i] = self._merge(dict(rows[i]), reply, answer)

    def _units(self, n: int) -> Iterator[list[int]]:
        size = self.options.batch_size
        for start in range(0, n, size):
            yield list(range(start, min(n, start + size)))

    async def process_async(self, batch: Batch) -> StepOutput:
        rows = batch.to_rows()
        results: list[Any] = [None] * len(rows)
        units = self._units(len(rows))
        call, read, merge = self.client.call, self.options.response, self._merge

        async def one_by_one() -> None:
            for unit in units:  # workers share one iterator: each unit is taken once
                i = unit[0]
                try:  # inline, not a method: no extra frame at each suspension
                    reply = await call(self._request(rows[i]), read)
                except Exception as exc:
                    results[i] = exc
                else:  # in place: only a failed record's original is still needed
                    results[i] = merge(rows[i], reply, reply.body)

        async def in_groups() -> None:
            for unit in units:
                await self._group(unit, rows, results)

        worker = one_by_one if self.options.batch_size == 1 else in_groups
        n_units = -(-len(rows) // self.options.batch_size)
        async with anyio.create_task_group() as tg:
            # More workers than request slots: a record waiting out a backoff or a
            # Retry-After holds a worker but no slot, and the others keep the slots busy.
            for _ in range(min(self.options.max_in_flight * PENDING_PER_SLOT, n_units)):
                tg.start_soon(worker)
        return collect_results(batch, rows, results, "http")
