"""``headrace demo-api``: deterministic endpoints, three pagination styles, every injected
fault, per-client rate limiting and the ``/stats`` it keeps — against the real server on
127.0.0.1 (port 0), plus the command itself as a subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from headrace.cli._demo_api import DemoApiOptions, DemoApiServer, file_bytes
from headrace.cli._demo_faults import (
    FaultConfig,
    RateLimiter,
    parse_duration,
    parse_rate_limit,
)

Check = Callable[[aiohttp.ClientSession, DemoApiServer], Awaitable[None]]


def run_against(check: Check, options: DemoApiOptions | None = None, *,
                timeout: float = 5.0) -> DemoApiServer:
    """Start the server on a free port, run ``check`` with a client session, stop the server."""

    async def main() -> DemoApiServer:
        async with DemoApiServer(options) as server, aiohttp.ClientSession(
            server.url, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as session:
            await check(session, server)
        return server

    return asyncio.run(main())


def test_geo_is_deterministic_and_validates_the_zip() -> None:
    """The same zip gives the same place; a missing or malformed zip is a 400."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/geo", params={"zip": "10115"}) as r1:
            first = await r1.json()
        async with session.get("/geo", params={"zip": "10115"}) as r2:
            assert await r2.json() == first
        assert first["zip"] == "10115" and -90 <= first["lat"] <= 90
        assert -180 <= first["lon"] <= 180 and first["city"]
        async with session.get("/geo", params={"zip": "90210"}) as other:
            assert (await other.json()) != first
        for params in ({}, {"zip": "12a45"}, {"zip": "123"}):
            async with session.get("/geo", params=params) as bad:
                assert bad.status == 400

    run_against(check)


def test_score_is_deterministic_per_id() -> None:
    """POST /score echoes the id with a score in [0, 1) that depends on the id only."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.post("/score", json={"id": 7, "x": 1}) as r1:
            first = await r1.json()
        async with session.post("/score", json={"id": 7, "x": 2}) as r2:
            assert await r2.json() == first
        assert first["id"] == 7 and 0 <= first["score"] < 1
        async with session.post("/score", json={"x": 1}) as bad:
            assert bad.status == 400
        async with session.post("/score", data=b"not json") as bad:
            assert bad.status == 400

    run_against(check)


async def _walk_pages(session: aiohttp.ClientSession) -> list[int]:
    seen: list[int] = []
    page: int | None = 1
    while page is not None:
        async with session.get("/items", params={"page": page, "per_page": 30}) as r:
            body = await r.json()
        seen += [item["id"] for item in body["items"]]
        page = body["next_page"]
    return seen


async def _walk_cursor(session: aiohttp.ClientSession) -> list[int]:
    seen: list[int] = []
    cursor: str | None = ""
    while cursor is not None:
        async with session.get("/items", params={"cursor": cursor, "limit": 40}) as r:
            body = await r.json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
    return seen


async def _walk_offsets(session: aiohttp.ClientSession) -> list[int]:
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        async with session.get("/items", params={"offset": offset, "limit": 70}) as r:
            body = await r.json()
        seen += [item["id"] for item in body["items"]]
        offset = body["next_offset"]
    return seen


async def _walk_links(session: aiohttp.ClientSession) -> list[int]:
    seen: list[int] = []
    url: Any = "/items/linked?per_page=25"
    while url is not None:
        async with session.get(url) as r:
            seen += [item["id"] for item in await r.json()]
            link = r.links.get("next")
        url = link["url"] if link else None
    return seen


@pytest.mark.parametrize("walk", [_walk_pages, _walk_offsets, _walk_cursor, _walk_links],
                         ids=["page", "offset", "cursor", "link-header"])
def test_each_pagination_style_yields_every_item_exactly_once(
        walk: Callable[[aiohttp.ClientSession], Awaitable[list[int]]]) -> None:
    """Following next_page / next_offset / next_cursor / Link rel=next visits 1..N once each."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        assert await walk(session) == list(range(1, 251))

    run_against(check, DemoApiOptions(items=250))


def test_bad_paging_parameters_are_400() -> None:
    """A page of 0, a huge per_page or a forged cursor is refused."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        for params in ({"page": "0"}, {"per_page": "5000"}, {"cursor": "!!"},
                       {"cursor": "bzotNQ"}, {"offset": "-1"}):
            async with session.get("/items", params=params) as r:
                assert r.status == 400, params

    run_against(check)


def test_files_have_deterministic_bytes_sizes_and_checksums() -> None:
    """Each file's body matches its Content-Length and X-Checksum-Sha256 and the listing."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/files") as r:
            listing = (await r.json())["files"]
        assert len(listing) == 3
        for entry in listing:
            async with session.get(f"/files/{entry['name']}") as r:
                body = await r.read()
                assert int(r.headers["Content-Length"]) == entry["size"] == len(body)
                assert r.headers["X-Checksum-Sha256"] == entry["sha256"]
            assert hashlib.sha256(body).hexdigest() == entry["sha256"]
        async with session.get("/files/200000.bin") as r:
            assert await r.read() == file_bytes("200000.bin", 200_000)
        async with session.get("/files/any.txt", params={"size": "10"}) as r:
            assert len(await r.read()) == 10

    run_against(check, DemoApiOptions(files=3))


def _always(**rates: float) -> DemoApiOptions:
    return DemoApiOptions(faults=FaultConfig(rates=rates), seed=1)


def test_error_rate_one_gives_5xx_and_is_counted() -> None:
    """--error-rate 1.0 answers every request with 500, 502 or 503."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        for _ in range(5):
            async with session.get("/geo", params={"zip": "12345"}) as r:
                assert r.status in (500, 502, 503)
        async with session.get("/healthz") as r:
            assert r.status == 200  # never faulted

    server = run_against(check, _always(error=1.0))
    assert server.stats.faults["error"] == 5


@pytest.mark.parametrize(("fmt", "expected"), [("seconds", "2"), ("http-date", None)])
def test_429_carries_retry_after_in_both_formats(fmt: str, expected: str | None) -> None:
    """An injected 429 says when to come back, as seconds or as an HTTP-date."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        params = {"zip": "12345", "fault_429": "1", "fault_retry_after": "2",
                  "fault_retry_after_format": fmt}
        async with session.get("/geo", params=params) as r:
            assert r.status == 429
            value = r.headers["Retry-After"]
        if expected is not None:
            assert value == expected
        else:
            assert parsedate_to_datetime(value).tzinfo is not None

    run_against(check)


def test_timeout_never_answers_until_the_client_gives_up() -> None:
    """--timeout-rate 1.0: the client's own short timeout fires; the server counts it."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        with pytest.raises(asyncio.TimeoutError):
            async with session.get("/items", timeout=aiohttp.ClientTimeout(total=0.3)) as r:
                await r.read()

    server = run_against(check, _always(timeout=1.0))
    assert server.stats.faults["timeout"] == 1


def test_reset_closes_the_connection_without_an_answer() -> None:
    """--reset-rate 1.0: the client sees a dropped connection, not a status."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        with pytest.raises(aiohttp.ClientError):
            async with session.get("/items") as r:
                await r.read()

    server = run_against(check, _always(reset=1.0))
    # aiohttp's client may retry an idempotent GET once on a dropped connection
    assert server.stats.faults["reset"] == server.stats.requests >= 1
    assert dict(server.stats.by_status) == {}


def test_malformed_json_does_not_parse() -> None:
    """--malformed-rate 1.0: a 200 whose JSON body is broken."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/geo", params={"zip": "12345"}) as r:
            assert r.status == 200
            with pytest.raises(ValueError):
                await r.json()

    run_against(check, _always(malformed=1.0))


def test_slow_body_still_delivers_the_whole_body() -> None:
    """--slow-body-rate 1.0: the body comes in chunks with pauses, complete and intact."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/files/5000.bin") as r:
            body = await r.read()
            assert hashlib.sha256(body).hexdigest() == r.headers["X-Checksum-Sha256"]
        async with session.get("/geo", params={"zip": "12345"}) as r:
            assert (await r.json())["zip"] == "12345"

    server = run_against(check, _always(slow_body=1.0))
    assert server.stats.faults["slow_body"] == 2


def test_latency_is_injected_and_counted() -> None:
    """A per-request fault_latency delays the answer (counted, not timed)."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        params = {"zip": "12345", "fault_latency": "5ms", "fault_latency_dist": "lognormal"}
        async with session.get("/geo", params=params) as r:
            assert r.status == 200

    server = run_against(check)
    assert server.stats.faults["latency"] == 1


def test_stats_see_concurrent_requests() -> None:
    """max_in_flight reports how many requests the server handled at once."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async def one() -> None:
            async with session.get("/items", params={"fault_latency": "200ms"}) as r:
                await r.read()

        await asyncio.gather(*(one() for _ in range(4)))

    server = run_against(check)
    assert 2 <= server.stats.max_in_flight <= 4
    assert server.stats.in_flight == 0


def test_unknown_fault_parameter_is_a_400() -> None:
    """A typo in a fault_ parameter is refused rather than ignored."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/items", params={"fault_eror": "1"}) as r:
            assert r.status == 400

    run_against(check)


def test_rate_limit_per_client_answers_429_with_retry_after() -> None:
    """--rate-limit 2/s: a burst beyond two requests gets 429 with Retry-After."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        statuses = []
        for _ in range(6):
            async with session.get("/items", params={"per_page": 1}) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
        assert 429 in statuses and statuses[0] == 200

    server = run_against(check, DemoApiOptions(faults=FaultConfig(rate_limit=2.0)))
    assert server.stats.faults["rate_limit"] >= 1


def test_rate_limiter_refills_with_an_injected_clock() -> None:
    """The token bucket refills at its rate; the wait it reports is what remains."""
    now = [0.0]
    limiter = RateLimiter(2.0, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # per client
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0


def test_seeded_faults_are_reproducible() -> None:
    """The same --seed gives the same sequence of faulted and clean answers."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        for _ in range(20):
            async with session.get("/geo", params={"zip": "12345"}) as r:
                await r.read()

    def statuses() -> dict[str, int]:
        options = DemoApiOptions(faults=FaultConfig(rates={"error": 0.5}), seed=42)
        return dict(run_against(check, options).stats.by_status)

    assert statuses() == statuses()


def test_stats_count_what_the_client_did_and_reset() -> None:
    """/stats counts requests by path and status (not itself or /healthz); reset clears it."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        for zip_code in ("11111", "22222", "bad"):
            async with session.get("/geo", params={"zip": zip_code}) as r:
                await r.read()
        async with session.post("/score", json={"id": 1}) as r:
            await r.read()
        async with session.get("/healthz") as r:
            await r.read()
        async with session.get("/stats") as r:
            stats = await r.json()
        assert stats["requests"] == 4
        assert stats["by_path"] == {"/geo": 3, "/score": 1}
        assert stats["by_status"] == {"200": 3, "400": 1}
        assert stats["faults"] == {}
        async with session.post("/stats/reset") as r:
            assert r.status == 200
        async with session.get("/stats") as r:
            assert (await r.json())["requests"] == 0

    run_against(check)


def test_parsers() -> None:
    """Durations and rates read the way the flags document them."""
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5") == 1.5
    assert parse_rate_limit("50/s") == 50
    assert parse_rate_limit("600/m") == 10
    with pytest.raises(ValueError):
        parse_duration("fast")


def test_cli_serves_until_sigint_and_exits_zero() -> None:
    """headrace demo-api --port 0 prints its URL, answers /healthz, and stops cleanly."""
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "headrace", "demo-api", "--port", "0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()  # bounded by the per-test timeout
        match = re.fullmatch(r"headrace demo-api listening on (http://\S+)\n", line)
        assert match, line

        async def ping() -> int:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                    s.get(match.group(1) + "/healthz") as r:
                return r.status

        assert asyncio.run(ping()) == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_cli_port_in_use_is_one_line_and_exit_2() -> None:
    """A port that is taken gives one error line and exit code 2."""
    from tests.conftest import run_cli

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        result = await asyncio.to_thread(run_cli, "demo-api", "--port", str(server.port),
                                         timeout=60)
        assert result.code == 2
        assert result.stderr.strip().count("\n") == 0
        assert "cannot listen" in result.stderr

    run_against(check, timeout=60)
