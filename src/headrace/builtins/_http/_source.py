"""The ``http`` source: a paginated collection endpoint, one batch per page.

The position of a batch is the token of the page after it (a page number, an offset, a
cursor, or the ``Link: rel=next`` URL), so ``--resume`` continues at the right page.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from yarl import URL

from headrace.errors import SourceError
from headrace.plugin import Batch, PluginContext, Position, RetriesExhausted, Source

from ._client import TRANSIENT_ERRORS, HttpClient, HttpOptions, Reply, Request, display_url
from ._template import MissingField, lookup

_KEEP_TOKENS = 4096  # pages whose successor token is remembered until committed


class Pagination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    style: Literal["none", "page", "offset", "cursor", "link"] = Field(
        default="none", description="page: ?page=N; offset: ?offset=K; cursor: ?cursor=TOKEN "
        "from the previous body; link: follow the Link rel=next header.")
    param: str | None = Field(
        default=None, description="Query parameter of the page number, offset or cursor "
        "(default: page, offset, cursor).")
    start: int | str | None = Field(
        default=None, description="First page (default 1), offset (0) or cursor ('').")
    size_param: str | None = Field(default=None,
                                   description="Query parameter of the page size.")
    size: int | None = Field(default=None, ge=1, le=100_000, description="Page size.")
    next: str | None = Field(
        default=None, description="Dotted path in the body to the next cursor (cursor: "
        "required), or to a value that is null on the last page (page/offset: optional).")

    @model_validator(mode="after")
    def _check(self) -> Pagination:
        if self.style == "cursor" and not self.next:
            raise ValueError("cursor pagination needs `next`: the body's path to the cursor")
        if self.size_param and not self.size:
            raise ValueError("size_param needs size")
        return self


class HttpSourceOptions(HttpOptions):
    url: str = Field(description="The collection's URL (query parameters may be in it).")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra query parameters on every page.")
    records: str | None = Field(
        default=None, description="Dotted path to the list of records in the body; "
        "default: the body itself if it is a list.")
    pagination: Pagination = Field(default_factory=Pagination)
    max_pages: int | None = Field(default=None, ge=1, description="Stop after this many pages.")


def _default_param(style: str) -> str:
    return {"page": "page", "offset": "offset", "cursor": "cursor"}.get(style, "")


class HttpSource(Source):
    """Reads a paginated JSON collection, page by page."""

    summary = "paginated JSON API (page, offset, cursor or Link header); resumable by page"
    Options: ClassVar[type[HttpSourceOptions]] = HttpSourceOptions
    options: HttpSourceOptions
    resumable = True
    applies_policy = True  # retries, breaker and rate limit per page request
    transient_errors = TRANSIENT_ERRORS

    def __init__(self, options: HttpSourceOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        try:
            self.base = URL(options.url)
        except ValueError as exc:
            raise SourceError(f"{context.where('url')}: bad URL: {exc}") from None
        self.client = HttpClient(options, context)
        paging = options.pagination
        self.param = paging.param or _default_param(paging.style)
        start: Any = paging.start
        if start is None:
            start = {"page": 1, "offset": 0, "cursor": ""}.get(paging.style)
        self._token: Any = start if paging.style != "link" else None
        self._page = 0  # pages read
        self._row = 0  # records read
        self._tokens: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._done = False

    def fingerprint(self) -> dict[str, Any] | None:
        return {"url": display_url(self.base)}

    def resume_token(self, position: Position) -> dict[str, Any]:
        token = self._tokens.get(position.end)
        if token is None:
            raise SourceError(f"no page token kept for page {position.end}")
        while self._tokens and next(iter(self._tokens)) < position.end:
            self._tokens.popitem(last=False)  # committed: never asked for again
        return token

    async def resume(self, token: dict[str, Any]) -> None:
        self._page = int(token["page"])
        self._row = int(token["row"])
        self._done = bool(token.get("done"))
        self._token = token.get("next")

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    def progress(self) -> int:
        return self._page

    def _request(self) -> Request:
        options, paging = self.options, self.options.pagination
        params = [(k, str(v)) for k, v in options.params.items()]
        url = self.base
        if paging.style == "link":
            url = URL(self._token) if self._token else self.base
            if self._token:
                params = []  # the next link carries the whole query
        elif paging.style != "none":
            params.append((self.param, str(self._token)))
        if paging.size_param and paging.size and (paging.style != "link" or not self._token):
            params.append((paging.size_param, str(paging.size)))
        # A Link to another origin (host or port): the server chose it, not the pipeline.
        from_data = (url.scheme, url.host, url.port) != (self.base.scheme, self.base.host,
                                                        self.base.port)
        return Request("GET", url, params=params or None,
                       headers=dict(options.headers) or None, from_data=from_data)

    def _where(self, request: Request) -> str:
        """The page a message is about: its URL, and its page number, offset or cursor
        (a Link URL holds its own; other query parameters may hold secrets)."""
        where = display_url(request.url)
        if self.options.pagination.style in ("page", "offset", "cursor"):
            token = str(self._token)
            token = token if len(token) <= 60 else token[:57] + "..."
            where += f" ({self.param}={token})"
        return where

    def _records(self, reply: Reply) -> list[Any]:
        body = reply.body
        if self.options.records:
            try:
                body = lookup(body, self.options.records)
            except MissingField:
                body = []  # an empty last page often omits the list
        if not isinstance(body, list):
            raise SourceError(f"{display_url(reply.url)}: expected a list of records"
                              + (f" at '{self.options.records}'" if self.options.records else
                                 " (set `records:` to the path of the list in the body)"))
        return body

    def _advance(self, reply: Reply, count: int) -> None:
        """Work out the next page's token from this one, or that this was the last."""
        paging = self.options.pagination
        style = paging.style
        marker: Any = True
        if paging.next:
            try:
                marker = lookup(reply.body, paging.next)
            except MissingField:
                marker = None
        if style == "none":
            self._done = True
        elif style == "page":
            self._done = count == 0 or marker is None
            self._token = int(self._token) + 1
        elif style == "offset":
            self._done = count == 0 or marker is None or (paging.size is not None
                                                          and count < paging.size)
            self._token = int(self._token) + count
        elif style == "cursor":
            self._done = marker in (None, "")
            self._token = marker
        else:
            link = reply.extra.get("next")
            self._done = link is None
            self._token = link

    async def batches(self) -> AsyncIterator[Batch]:
        max_pages = self.options.max_pages
        while not self._done and (max_pages is None or self._page < max_pages):
            request = self._request()
            try:
                reply = await self.client.call(request, "json")
            except RetriesExhausted as exc:
                raise SourceError(f"{self._where(request)}: {exc}") from exc
            except Exception as exc:
                raise SourceError(f"{self._where(request)}: {type(exc).__name__}: "
                                  f"{exc}") from exc
            items = self._records(reply)
            self._advance(reply, len(items))
            start_page, start_row = self._page, self._row
            self._page += 1
            self._row += len(items)
            self._tokens[self._page] = {"page": self._page, "row": self._row,
                                        "next": self._token, "done": self._done}
            if len(self._tokens) > _KEEP_TOKENS:
                self._tokens.popitem(last=False)
            yield self._batch(items, start_page, start_row)

    def _batch(self, items: list[Any], page: int, row: int) -> Batch:
        position = Position(display_url(self.base), page, page + 1, unit="page",
                            next_row=row + len(items))
        ids = np.arange(row, row + len(items), dtype=np.int64)
        records = [item if isinstance(item, dict) else {"value": item} for item in items]
        try:
            return Batch.from_arrow(pa.Table.from_pylist(records), row_ids=ids,
                                    position=position)
        except (pa.ArrowException, TypeError, ValueError):  # mixed types: rows it is
            return Batch.from_rows(records, row_ids=ids, position=position)
