"""``headrace demo-api``: a local aiohttp server that misbehaves on purpose, so HTTP plugins,
examples, tests and benchmarks run offline. Endpoints and faults: ``docs/demo-api.md``.

Every answer is deterministic (from the zip, the id, the item number, the file name); faults
are drawn from one seeded source (``_demo_faults``). ``/stats``, ``/stats/reset`` and
``/healthz`` never see a fault and are not counted.
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
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from headrace.cli._demo_faults import Dice, FaultConfig, RateLimiter, retry_after_value

EXEMPT = frozenset({"/stats", "/stats/reset", "/healthz"})
MAX_FILE_SIZE = 1 << 30
CHUNK = 1 << 16
_CITY_A = ("North", "South", "East", "West", "Lake", "River", "Oak", "Pine", "Stone", "Fair")
_CITY_B = ("brook", "field", "haven", "ford", "ville", "port", "wood", "dale", "ton", "mont")


@dataclass
class DemoApiOptions:
    items: int = 1000
    files: int = 100
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None


@dataclass
class Stats:
    """What the server saw: counted by path, by status and by injected fault kind."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "by_path": dict(self.by_path),
                "by_status": dict(self.by_status), "faults": dict(self.faults)}


class _State:
    def __init__(self, options: DemoApiOptions) -> None:
        self.options = options
        self.stats = Stats()
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
    if request.path in EXEMPT:
        return await handler(request)
    state = request.app[STATE]
    stats = state.stats
    stats.requests += 1
    stats.by_path[request.path] += 1
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    try:
        response = await _with_faults(request, handler, state)
    except web.HTTPException as exc:
        stats.by_status[str(exc.status)] += 1
        raise
    finally:
        stats.in_flight -= 1
    if response.status:
        stats.by_status[str(response.status)] += 1
    return response


async def _with_faults(request: web.Request, handler: Handler,
                       state: _State) -> web.StreamResponse:
    try:
        config = state.options.faults.with_overrides(request.query)
    except ValueError as exc:
        raise _bad_request(str(exc)) from None
    if state.limiter is not None:
        wait = state.limiter.acquire(request.remote or "?")
        if wait > 0:
            state.stats.faults["rate_limit"] += 1
            return await _json(request, {"error": "rate limit exceeded"}, status=429, headers={
                "Retry-After": retry_after_value(wait, config.retry_after_format)})
    delay = state.dice.latency(config)
    if delay > 0:
        state.stats.faults["latency"] += 1
        await asyncio.sleep(delay)
    kind = state.dice.pick(config)
    if kind is not None:
        state.stats.faults[kind] += 1
    if kind == "timeout":
        await _wait_for_client_to_give_up(request, config.timeout_max)
        return await _json(request, {"error": "gateway timeout"}, status=504)
    if kind == "reset":
        if request.transport is not None:
            request.transport.abort()  # aiohttp then cancels this handler (connection lost)
        await asyncio.sleep(1.0)
        return web.Response(status=500)  # not reached while handler_cancellation is on
    if kind == "429":
        return await _json(request, {"error": "too many requests"}, status=429, headers={
            "Retry-After": retry_after_value(config.retry_after, config.retry_after_format)})
    if kind == "error":
        status = state.dice.error_status()
        return await _json(request, {"error": "injected failure"}, status=status)
    _FAULT.set(kind)  # slow_body and malformed shape the handler's own answer
    return await handler(request)


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATE].stats.as_dict())


async def stats_reset(request: web.Request) -> web.StreamResponse:
    request.app[STATE].stats = Stats()
    return web.json_response({"status": "reset"})


async def geo(request: web.Request) -> web.StreamResponse:
    zip_code = request.query.get("zip", "")
    if not re.fullmatch(r"[0-9]{5}", zip_code):
        raise _bad_request("zip must be five digits")
    h = _digest(f"geo:{zip_code}")
    lat = round((h % 1_800_000) / 10_000 - 90, 4)
    lon = round(((h >> 24) % 3_600_000) / 10_000 - 180, 4)
    city = _CITY_A[(h >> 48) % 10] + _CITY_B[(h >> 52) % 10]
    return await _json(request, {"zip": zip_code, "lat": lat, "lon": lon, "city": city})


async def score(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except ValueError:
        raise _bad_request("body must be JSON") from None
    if not isinstance(body, dict) or "id" not in body:
        raise _bad_request("body must be a JSON object with an id")
    value = _digest("score:" + json.dumps(body["id"], sort_keys=True)) / 2**64
    return await _json(request, {"id": body["id"], "score": round(value, 6)})


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
    app.router.add_get("/geo", geo)
    app.router.add_post("/score", score)
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
