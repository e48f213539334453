"""``headrace demo-api``: a local aiohttp server that misbehaves on purpose, so HTTP plugins,
examples, tests and benchmarks run offline. Endpoints and faults: ``docs/demo-api.md``.

Every answer is deterministic (from the zip, the id, the item number, the file name); faults
are drawn from one seeded source (``_demo_faults``). What tests observe of a client is kept
here too: counters (``/stats``), a request log (``/stats/requests``) and what ``/ingest``
accepted (``/ingest/records``). Those readers, ``/stats/reset`` and ``/healthz`` never see a
fault and are not counted, so looking does not change what is seen.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from headrace.cli._demo_faults import Dice, FaultConfig, RateLimiter, retry_after_value

EXEMPT = frozenset({"/stats", "/stats/reset", "/stats/requests", "/healthz", "/ingest/records"})
MAX_FILE_SIZE = 1 << 30
MAX_BATCH = 1000  # elements in one POST /score/batch
MAX_CHAIN = 1000  # hops of /redirect/chain
LOG_SIZE = 200_000  # requests kept by the request log
REDIRECT_STATUSES = frozenset({"301", "302", "303", "307", "308"})
CHUNK = 1 << 16
_CITY_A = ("North", "South", "East", "West", "Lake", "River", "Oak", "Pine", "Stone", "Fair")
_CITY_B = ("brook", "field", "haven", "ford", "ville", "port", "wood", "dale", "ton", "mont")


@dataclass
class DemoApiOptions:
    items: int = 1000
    files: int = 100
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None


def path_group(path: str) -> str:
    """The key of ``max_in_flight_by_path``: every file download counts as ``/files``, so a
    client's download concurrency is one number whatever the file names."""
    return "/files" if path.startswith("/files/") else path


@dataclass
class Stats:
    """What the server saw: counted by path, by status and by injected fault kind."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    in_flight_by_path: Counter[str] = field(default_factory=Counter)
    max_in_flight_by_path: dict[str, int] = field(default_factory=dict)

    def enter(self, path: str) -> str:
        """Count a request that starts on ``path``; returns its group, for :meth:`leave`."""
        group = path_group(path)
        self.requests += 1
        self.by_path[path] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.in_flight_by_path[group] += 1
        now = self.in_flight_by_path[group]
        if now > self.max_in_flight_by_path.get(group, 0):
            self.max_in_flight_by_path[group] = now
        return group

    def leave(self, group: str, status: int | None) -> None:
        """Count the end of a request: answered with ``status``, or None for no answer."""
        self.in_flight -= 1
        self.in_flight_by_path[group] -= 1
        if status is not None:
            self.by_status[str(status)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "by_path": dict(self.by_path),
                "by_status": dict(self.by_status), "faults": dict(self.faults),
                "max_in_flight_by_path": dict(self.max_in_flight_by_path)}


# A request-log entry is a list in this field order (filled in when the request ends).
LOG_FIELDS = ("t", "end", "method", "path", "query", "status", "fault", "client",
              "idempotency_key", "authorization")
_T, _END, _PATH, _STATUS, _FAULT_KIND = 0, 1, 3, 5, 6


class RequestLog:
    """The last ``maxlen`` counted requests, oldest first, timed from the server's start.

    Tests check a client from the server's side with it: that no retry came before the
    ``Retry-After`` of the 429 it followed, how many requests one record cost, whether
    credentials went out. The benchmark sends thousands of requests a second, so each costs one
    small list; the dicts of ``/stats/requests`` are built only when someone reads them.
    """

    def __init__(self, maxlen: int = LOG_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._origin = clock()
        self.entries: deque[list[Any]] = deque(maxlen=maxlen)

    def now(self) -> float:
        return self._clock() - self._origin

    def start(self, request: web.Request) -> list[Any]:
        """Log a request as it arrives: no status, no end yet."""
        headers = request.headers
        entry = [self.now(), None, request.method, request.path, request.query_string, None,
                 None, request.remote, headers.get("Idempotency-Key"),
                 "Authorization" in headers]
        self.entries.append(entry)
        return entry

    def finish(self, entry: list[Any], status: int | None) -> None:
        """Note the answer; a request that ended without one (reset, client gone) keeps nulls."""
        if status is not None:
            entry[_END] = self.now()
            entry[_STATUS] = status

    def select(self, path: str | None = None,
               since: float | None = None) -> list[dict[str, Any]]:
        """Entries on exactly ``path`` that arrived at ``since`` or later, as dicts."""
        return [dict(zip(LOG_FIELDS, entry, strict=True)) for entry in self.entries
                if (path is None or entry[_PATH] == path)
                and (since is None or entry[_T] >= since)]

    def clear(self) -> None:
        self.entries.clear()


@dataclass
class IngestStore:
    """What ``POST /ingest`` accepted, to check a sink's exactly-once delivery: the records'
    ids in arrival order, and the ``Idempotency-Key`` values already seen (a repeated key is
    answered but not stored again)."""

    ids: list[Any] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    duplicates: int = 0
    unkeyed: int = 0

    def accept(self, key: str | None, records: list[dict[str, Any]]) -> bool:
        """Store ``records`` unless ``key`` was seen before; False for such a duplicate."""
        if key is None:
            self.unkeyed += 1
        elif key in self.keys:
            self.duplicates += 1
            return False
        else:
            self.keys.add(key)
        self.ids.extend(record.get("id") for record in records)
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "keys": len(self.keys), "duplicates": self.duplicates,
                "unkeyed": self.unkeyed}


class _State:
    def __init__(self, options: DemoApiOptions) -> None:
        self.options = options
        self.stats = Stats()
        self.log = RequestLog()
        self.ingest = IngestStore()
        self.dice = Dice(options.seed)
        rate = options.faults.rate_limit
        self.limiter = RateLimiter(rate) if rate else None
        self.checksums: dict[tuple[str, int], str] = {}


STATE = web.AppKey("demo_api_state", _State)
# The fault this request drew, for handlers shaping their own body (each request: own task).
_FAULT: ContextVar[str | None] = ContextVar("demo_api_fault", default=None)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def _send(request: web.Request, body: bytes, *, status: int = 200,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> web.StreamResponse:
    """A response, sent slowly in small chunks when this request drew ``slow_body``."""
    if _FAULT.get() != "slow_body":
        return web.Response(body=body, status=status, content_type=content_type,
                            headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = content_type
    response.content_length = len(body)
    await response.prepare(request)
    step = max(1, len(body) // 10)
    for start in range(0, len(body), step):
        await response.write(body[start:start + step])
        await asyncio.sleep(request.app[STATE].options.faults.slow_body_pause)
    await response.write_eof()
    return response


async def _json(request: web.Request, data: Any, *, status: int = 200,
                headers: dict[str, str] | None = None) -> web.StreamResponse:
    body = json.dumps(data, separators=(",", ":")).encode()
    if _FAULT.get() == "malformed":
        body = body[: max(1, len(body) // 2)] + b"<!-- not json"
    return await _send(request, body, status=status, headers=headers)


async def _wait_for_client_to_give_up(request: web.Request, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.05)


@web.middleware
async def _fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and log every request but the exempt ones, and inject its faults."""
    if request.path in EXEMPT:
        return await handler(request)
    state = request.app[STATE]
    stats, log = state.stats, state.log  # these objects, even if /stats/reset swaps them
    entry = log.start(request)
    group = stats.enter(request.path)
    status: int | None = None  # stays None when the request ends without an answer
    try:
        response = await _with_faults(request, handler, state, entry)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        stats.leave(group, status)
        log.finish(entry, status)


async def _with_faults(request: web.Request, handler: Handler, state: _State,
                       entry: list[Any]) -> web.StreamResponse:
    try:
        config = state.options.faults.with_overrides(request.query)
    except ValueError as exc:
        raise _bad_request(str(exc)) from None
    if state.limiter is not None:
        wait = state.limiter.acquire(request.remote or "?")
        if wait > 0:
            state.stats.faults["rate_limit"] += 1
            entry[_FAULT_KIND] = "rate_limit"
            return await _json(request, {"error": "rate limit exceeded"}, status=429, headers={
                "Retry-After": retry_after_value(wait, config.retry_after_format)})
    delay = state.dice.latency(config)
    if delay > 0:
        state.stats.faults["latency"] += 1
        await asyncio.sleep(delay)
    kind = state.dice.pick(config)
    if kind is None:
        return await handler(request)
    state.stats.faults[kind] += 1
    entry[_FAULT_KIND] = kind
    return await _inject(kind, request, handler, state, config)


async def _inject(kind: str, request: web.Request, handler: Handler, state: _State,
                  config: FaultConfig) -> web.StreamResponse:
    """Answer (or not) as fault ``kind`` says; only the last three kinds run the handler."""
    if kind == "timeout":
        await _wait_for_client_to_give_up(request, config.timeout_max)
        return await _json(request, {"error": "gateway timeout"}, status=504)
    if kind == "reset":
        return await _drop_connection(request)
    if kind == "429":
        return await _json(request, {"error": "too many requests"}, status=429, headers={
            "Retry-After": retry_after_value(config.retry_after, config.retry_after_format)})
    if kind == "error":
        status = state.dice.error_status()
        return await _json(request, {"error": "injected failure"}, status=status)
    _FAULT.set(kind)  # ack_loss, slow_body and malformed shape the handler's own answer
    response = await handler(request)  # a 400 is still answered: nothing was accepted
    if kind == "ack_loss":
        return await _drop_connection(request)  # the work is done, its answer is lost
    return response


async def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Abort the connection without an answer; aiohttp then cancels this handler."""
    if request.transport is not None:
        request.transport.abort()
    await asyncio.sleep(1.0)
    return web.Response(status=500)  # not reached while handler_cancellation is on


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATE].stats.as_dict())


async def stats_reset(request: web.Request) -> web.StreamResponse:
    """Forget everything observed so far: counters, request log, ingested records and keys."""
    state = request.app[STATE]
    state.stats = Stats()
    state.log.clear()
    state.ingest = IngestStore()
    return web.json_response({"status": "reset"})


async def stats_requests(request: web.Request) -> web.StreamResponse:
    since_text = request.query.get("since")
    try:
        since = None if since_text is None else float(since_text)
    except ValueError:
        raise _bad_request("since must be a number of seconds") from None
    entries = request.app[STATE].log.select(request.query.get("path"), since)
    return web.json_response({"requests": entries})


async def geo(request: web.Request) -> web.StreamResponse:
    zip_code = request.query.get("zip", "")
    if not re.fullmatch(r"[0-9]{5}", zip_code):
        raise _bad_request("zip must be five digits")
    h = _digest(f"geo:{zip_code}")
    lat = round((h % 1_800_000) / 10_000 - 90, 4)
    lon = round(((h >> 24) % 3_600_000) / 10_000 - 180, 4)
    city = _CITY_A[(h >> 48) % 10] + _CITY_B[(h >> 52) % 10]
    return await _json(request, {"zip": zip_code, "lat": lat, "lon": lon, "city": city})


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise _bad_request("body must be JSON") from None


def _score(record_id: Any) -> float:
    """A score in [0, 1) from the id alone, so /score and /score/batch always agree."""
    return round(_digest("score:" + json.dumps(record_id, sort_keys=True)) / 2**64, 6)


async def score(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    if not isinstance(body, dict) or "id" not in body:
        raise _bad_request("body must be a JSON object with an id")
    return await _json(request, {"id": body["id"], "score": _score(body["id"])})


async def score_batch(request: web.Request) -> web.StreamResponse:
    """Many ``/score`` calls in one request, answered in order; one bad element fails all."""
    body = await _json_body(request)
    if not isinstance(body, list) or len(body) > MAX_BATCH:
        raise _bad_request(f"body must be a JSON list of at most {MAX_BATCH} objects")
    for index, element in enumerate(body):
        if not isinstance(element, dict) or "id" not in element:
            raise _bad_request(f"element {index} is not a JSON object with an id")
    return await _json(request, [{"id": e["id"], "score": _score(e["id"])} for e in body])


def _redirect_status(request: web.Request) -> int:
    text = request.query.get("status", "302")
    if text not in REDIRECT_STATUSES:
        raise _bad_request("status must be one of " + ", ".join(sorted(REDIRECT_STATUSES)))
    return int(text)


async def redirect(request: web.Request) -> web.StreamResponse:
    """A redirect to any ``to=`` URL, unchecked: clients must refuse forbidden hosts."""
    status = _redirect_status(request)
    target = request.query.get("to", "")
    if not target or "\r" in target or "\n" in target:
        raise _bad_request("to must be a URL on one line")
    return web.Response(status=status, headers={"Location": target})


async def redirect_chain(request: web.Request) -> web.StreamResponse:
    """``n`` more redirects (other query parameters kept), then ``{"ok": true}``: for tests
    of a client's redirect limit."""
    status = _redirect_status(request)
    if "n" not in request.query:
        raise _bad_request("n is required")
    hops = _int_query(request, "n", 0, 0, MAX_CHAIN)
    if hops == 0:
        return await _json(request, {"ok": True})
    location = request.rel_url.update_query(n=str(hops - 1))
    return web.Response(status=status, headers={"Location": str(location)})


async def ingest(request: web.Request) -> web.StreamResponse:
    """An HTTP sink's target: 201 with the count stored, or 200 for a repeated
    ``Idempotency-Key`` (stored once, however often the client retried)."""
    body = await _json_body(request)
    records = body if isinstance(body, list) else [body]
    if not all(isinstance(record, dict) for record in records):
        raise _bad_request("body must be a JSON object or a list of objects")
    key = request.headers.get("Idempotency-Key")
    if not request.app[STATE].ingest.accept(key, records):
        return await _json(request, {"duplicate": True})
    return await _json(request, {"accepted": len(records)}, status=201)


async def ingest_records(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATE].ingest.as_dict())


def _item(number: int) -> dict[str, Any]:
    return {"id": number, "name": f"item-{number}",
            "value": round(_digest(f"item:{number}") % 100_000 / 100, 2)}


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise _bad_request(f"{name} must be an integer from {low} to {high}")
    return int(text)


def _page(request: web.Request) -> tuple[int, int, list[dict[str, Any]], bool]:
    total = request.app[STATE].options.items
    page = _int_query(request, "page", 1, 1, 10**9)
    per_page = _int_query(request, "per_page", 100, 1, 1000)
    start = (page - 1) * per_page
    numbers = range(start + 1, min(start + per_page, total) + 1)
    return page, per_page, [_item(n) for n in numbers], start + per_page < total


async def items(request: web.Request) -> web.StreamResponse:
    if "cursor" in request.query:
        return await _items_by_cursor(request)
    if "offset" in request.query:
        offset = _int_query(request, "offset", 0, 0, 10**9)
        found, after = _slice(request, offset)
        return await _json(request, {"items": found, "next_offset": after})
    page, _, found, more = _page(request)
    return await _json(request, {"items": found, "next_page": page + 1 if more else None})


def _slice(request: web.Request, offset: int) -> tuple[list[dict[str, Any]], int | None]:
    """Items after ``offset`` (``?limit=``, default 100), and the next offset or None."""
    total = request.app[STATE].options.items
    limit = _int_query(request, "limit", 100, 1, 1000)
    found = [_item(n) for n in range(offset + 1, min(offset + limit, total) + 1)]
    return found, offset + limit if offset + limit < total else None


async def _items_by_cursor(request: web.Request) -> web.StreamResponse:
    token = request.query["cursor"]
    offset = 0
    if token:
        try:
            offset = int(base64.urlsafe_b64decode(token + "==").decode().removeprefix("o:"))
        except ValueError:
            raise _bad_request("invalid cursor") from None
        if offset < 0:
            raise _bad_request("invalid cursor")
    found, after = _slice(request, offset)
    next_cursor = (None if after is None
                   else base64.urlsafe_b64encode(f"o:{after}".encode()).decode().rstrip("="))
    return await _json(request, {"items": found, "next_cursor": next_cursor})


async def items_linked(request: web.Request) -> web.StreamResponse:
    page, per_page, found, more = _page(request)
    headers = {"X-Total-Count": str(request.app[STATE].options.items)}
    if more:
        url = request.url.with_query({"page": str(page + 1), "per_page": str(per_page)})
        headers["Link"] = f'<{url}>; rel="next"'
    return await _json(request, found, headers=headers)


def _chunk(name: str, index: int, size: int) -> bytes:
    """Bytes ``index * CHUNK`` onwards of file ``name`` (``size`` bytes in all)."""
    length = min(CHUNK, size - index * CHUNK)
    return random.Random(f"{name}/{index}").randbytes(CHUNK)[:length]


def file_bytes(name: str, size: int) -> bytes:
    """The deterministic content of file ``name`` (``size`` bytes)."""
    return b"".join(_chunk(name, i, size) for i in range(-(-size // CHUNK)))


def _file_size(request: web.Request, name: str) -> int:
    if "size" in request.query:
        return _int_query(request, "size", 0, 0, MAX_FILE_SIZE)
    match = re.fullmatch(r"([0-9]+)(\.\w+)?", name)
    if match and int(match.group(1)) <= MAX_FILE_SIZE:
        return int(match.group(1))
    return 1024 + _digest(f"size:{name}") % (255 * 1024)


def _checksum(name: str, size: int) -> str:
    digest = hashlib.sha256()
    for index in range(-(-size // CHUNK)):
        digest.update(_chunk(name, index, size))
    return digest.hexdigest()


async def _cached_checksum(state: _State, name: str, size: int) -> str:
    key = (name, size)
    if key not in state.checksums:
        if size > 1 << 20:
            state.checksums[key] = await asyncio.to_thread(_checksum, name, size)
        else:
            state.checksums[key] = _checksum(name, size)
    return state.checksums[key]


async def files_list(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    listing = []
    for number in range(1, state.options.files + 1):
        name = f"file-{number:05d}.bin"
        size = _file_size(request, name)
        listing.append({"name": name, "size": size,
                        "sha256": await _cached_checksum(state, name, size)})
    return await _json(request, {"files": listing})


async def file_get(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    size = _file_size(request, name)
    checksum = await _cached_checksum(request.app[STATE], name, size)
    if _FAULT.get() == "ack_loss":
        return web.Response()  # not streamed yet, so the middleware can still lose it
    response = web.StreamResponse(headers={"X-Checksum-Sha256": checksum})
    response.content_type = "application/octet-stream"
    response.content_length = size
    await response.prepare(request)
    slow = _FAULT.get() == "slow_body"
    pause = request.app[STATE].options.faults.slow_body_pause
    if request.method != "HEAD":
        for index in range(-(-size // CHUNK)):
            chunk = _chunk(name, index, size)
            step = max(1, len(chunk) // 10) if slow else len(chunk)
            for offset in range(0, len(chunk), step):
                await response.write(chunk[offset:offset + step])
                if slow:
                    await asyncio.sleep(pause)
    await response.write_eof()
    return response


def create_app(options: DemoApiOptions | None = None) -> web.Application:
    app = web.Application(middlewares=[_fault_middleware])
    app[STATE] = _State(options or DemoApiOptions())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", stats_reset)
    app.router.add_get("/stats/requests", stats_requests)
    app.router.add_get("/geo", geo)
    app.router.add_post("/score", score)
    app.router.add_post("/score/batch", score_batch)
    for method in ("GET", "POST"):  # POST too: a sink's refusal of redirects is tested
        app.router.add_route(method, "/redirect", redirect)
        app.router.add_route(method, "/redirect/chain", redirect_chain)
    app.router.add_post("/ingest", ingest)
    app.router.add_get("/ingest/records", ingest_records)
    app.router.add_get("/items", items)
    app.router.add_get("/items/linked", items_linked)
    app.router.add_get("/files", files_list)
    app.router.add_get("/files/{name}", file_get)
    return app


class DemoApiServer:
    """The server bound to ``host:port`` (0 = any free port) while the ``async with`` lasts."""

    def __init__(self, options: DemoApiOptions | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.app = create_app(options)
        self.host = host
        self.port = port
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None,
                                     shutdown_timeout=1.0)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> Stats:
        return self.app[STATE].stats

    async def __aenter__(self) -> DemoApiServer:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        server = site._server  # the asyncio server, to learn the port chosen for port 0
        if server is not None and self.port == 0:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


async def serve(options: DemoApiOptions, host: str, port: int,
                ready: Callable[[str], None]) -> None:
    """Run until SIGINT or SIGTERM; ``ready(url)`` once bound."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with DemoApiServer(options, host, port) as server:
            ready(server.url)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
