"""``headrace demo-api``: deterministic endpoints, the pagination styles, redirects, the
idempotent ``/ingest`` sink target, every injected fault, per-client rate limiting, and what
the server observes (``/stats``, ``/stats/requests``, ``/ingest/records``) — against the real
server on 127.0.0.1 (port 0), plus the command itself as a subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from headrace.cli._demo_api import (
    DemoApiOptions,
    DemoApiServer,
    RequestLog,
    Stats,
    file_bytes,
)
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


async def _get_json(session: aiohttp.ClientSession, url: str, /, **params: str) -> Any:
    async with session.get(url, params=params) as r:
        assert r.status == 200, (url, r.status)
        return await r.json()


def test_score_batch_scores_every_id_in_order_like_score() -> None:
    """POST /score/batch answers one {id, score} per element, in order, equal to /score's."""
    ids: list[Any] = [3, "a", 1, {"k": [1, 2]}, 3]

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.post("/score/batch", json=[{"id": i, "x": 0} for i in ids]) as r:
            assert r.status == 200
            batch = await r.json()
        singles = []
        for i in ids:
            async with session.post("/score", json={"id": i}) as r:
                singles.append(await r.json())
        assert batch == singles
        async with session.post("/score/batch", json=[]) as r:
            assert await r.json() == []

    run_against(check)


@pytest.mark.parametrize("body", [
    b"not json", b'{"id": 1}', b"[1, 2]", b'[{"id": 1}, {"x": 2}]',
    ("[" + ",".join(['{"id": 1}'] * 1001) + "]").encode(),
], ids=["not-json", "not-a-list", "not-objects", "element-without-id", "1001-elements"])
def test_score_batch_refuses_bad_bodies_with_400(body: bytes) -> None:
    """A body that is not a list of at most 1000 objects with ids is a 400, not a partial answer."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.post("/score/batch", data=body) as r:
            assert r.status == 400
            assert "error" in await r.json()

    run_against(check)


def test_score_batch_of_1000_is_accepted_and_a_fault_fails_the_whole_batch() -> None:
    """1000 elements are allowed; an injected 503-style error answers the batch, not elements."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        body = [{"id": n} for n in range(1000)]
        async with session.post("/score/batch", json=body) as r:
            assert len(await r.json()) == 1000
        async with session.post("/score/batch", params={"fault_error": "1"}, json=body) as r:
            assert r.status in (500, 502, 503)
            assert "error" in await r.json()

    run_against(check)


@pytest.mark.parametrize(("status", "expected"), [
    (None, 302), ("301", 301), ("302", 302), ("303", 303), ("307", 307), ("308", 308)],
    ids=["default", "301", "302", "303", "307", "308"])
def test_redirect_answers_the_status_with_the_unchecked_location(
        status: str | None, expected: int) -> None:
    """GET and POST /redirect send the asked-for status and Location: to, whatever host it names."""
    target = "http://169.254.169.254/latest/meta-data?x=1&y=2"

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        params = {"to": target} if status is None else {"to": target, "status": status}
        for method in ("GET", "POST"):
            async with session.request(method, "/redirect", params=params,
                                       allow_redirects=False) as r:
                assert r.status == expected
                assert r.headers["Location"] == target

    run_against(check)


@pytest.mark.parametrize("params", [
    {}, {"to": ""}, {"to": "http://x/\r\nSet-Cookie: a=b"}, {"to": "/", "status": "200"},
    {"to": "/", "status": "304"}, {"to": "/", "status": "x"}],
    ids=["no-to", "empty-to", "header-injection", "200", "304", "not-a-number"])
def test_redirect_bad_parameters_are_400(params: dict[str, str]) -> None:
    """A missing or multi-line target, or a status that is not a redirect, is refused."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/redirect", params=params, allow_redirects=False) as r:
            assert r.status == 400

    run_against(check)


def test_redirect_chain_counts_down_to_ok_and_trips_a_client_limit() -> None:
    """/redirect/chain?n=3 takes three hops (fault parameters kept) to {"ok": true}; a client
    allowing two redirects gives up."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        params = {"n": "3", "status": "307", "fault_latency": "1ms"}
        async with session.get("/redirect/chain", params=params) as r:
            assert r.status == 200 and await r.json() == {"ok": True}
            assert [h.status for h in r.history] == [307, 307, 307]
            assert r.history[0].headers["Location"] == (
                "/redirect/chain?n=2&status=307&fault_latency=1ms")
        with pytest.raises(aiohttp.TooManyRedirects):
            async with session.get("/redirect/chain", params={"n": "3"}, max_redirects=2):
                pass
        for bad in ({}, {"n": "-1"}, {"n": "1001"}):
            async with session.get("/redirect/chain", params=bad) as r:
                assert r.status == 400, bad

    server = run_against(check)
    assert server.stats.faults["latency"] == 4  # every hop saw its faults


def test_redirect_faults_apply() -> None:
    """An injected 429 on /redirect is answered instead of the redirect."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/redirect", params={"to": "/geo", "fault_429": "1"},
                               allow_redirects=False) as r:
            assert r.status == 429 and "Location" not in r.headers

    run_against(check)


def test_ingest_accepts_objects_and_lists_and_keeps_ids_in_order() -> None:
    """POST /ingest stores one object or a list of them (201 with the count), ids in order."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.post("/ingest", json={"id": 1, "v": "a"}) as r:
            assert r.status == 201 and await r.json() == {"accepted": 1}
        async with session.post("/ingest", json=[{"id": 2}, {"id": 3}, {"v": "no id"}]) as r:
            assert r.status == 201 and await r.json() == {"accepted": 3}
        assert await _get_json(session, "/ingest/records") == {
            "ids": [1, 2, 3, None], "keys": 0, "duplicates": 0, "unkeyed": 2}

    run_against(check)


@pytest.mark.parametrize("body", [b"not json", b"42", b'"text"', b'[{"id": 1}, 2]'],
                         ids=["not-json", "number", "string", "list-with-a-non-object"])
def test_ingest_refuses_bad_bodies_and_stores_nothing(body: bytes) -> None:
    """A body that is not a JSON object or list of objects is a 400 and nothing is kept."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.post("/ingest", data=body, headers={"Idempotency-Key": "k"}) as r:
            assert r.status == 400
        assert await _get_json(session, "/ingest/records") == {
            "ids": [], "keys": 0, "duplicates": 0, "unkeyed": 0}

    run_against(check)


def test_ingest_deduplicates_by_idempotency_key() -> None:
    """A repeated Idempotency-Key is answered 200 {"duplicate": true} and not stored again."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        sent = (("a", [1, 2]), ("b", [3]), ("a", [1, 2]), ("a", [99]))
        answers = []
        for key, ids in sent:
            async with session.post("/ingest", json=[{"id": i} for i in ids],
                                    headers={"Idempotency-Key": key}) as r:
                answers.append((r.status, await r.json()))
        assert answers == [(201, {"accepted": 2}), (201, {"accepted": 1}),
                           (200, {"duplicate": True}), (200, {"duplicate": True})]
        assert await _get_json(session, "/ingest/records") == {
            "ids": [1, 2, 3], "keys": 2, "duplicates": 2, "unkeyed": 0}

    run_against(check)


def test_ingest_faults_strike_before_the_body_is_accepted() -> None:
    """An injected 5xx, 429 or reset on /ingest means nothing was stored."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        for fault in ("fault_error", "fault_429"):
            async with session.post("/ingest", params={fault: "1"}, json={"id": 1}) as r:
                assert r.status >= 429
        with pytest.raises(aiohttp.ClientError):
            async with session.post("/ingest", params={"fault_reset": "1"}, json={"id": 1}):
                pass
        assert (await _get_json(session, "/ingest/records"))["ids"] == []

    run_against(check)


def test_ack_loss_stores_the_records_then_drops_the_answer() -> None:
    """fault_ack_loss=1: the client sees a dropped connection although the records were
    stored; its retry with the same key is a duplicate, so the record counts once."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        headers = {"Idempotency-Key": "batch-1"}
        with pytest.raises(aiohttp.ClientError):
            async with session.post("/ingest", params={"fault_ack_loss": "1"},
                                    json=[{"id": 7}], headers=headers):
                pass
        assert (await _get_json(session, "/ingest/records"))["ids"] == [7]
        async with session.post("/ingest", json=[{"id": 7}], headers=headers) as r:
            assert (r.status, await r.json()) == (200, {"duplicate": True})
        assert await _get_json(session, "/ingest/records") == {
            "ids": [7], "keys": 1, "duplicates": 1, "unkeyed": 0}
        lost = (await _get_json(session, "/stats/requests"))["requests"][0]
        assert (lost["fault"], lost["status"], lost["end"]) == ("ack_loss", None, None)

    server = run_against(check)
    assert server.stats.faults["ack_loss"] == 1


def test_a_client_retrying_with_its_key_through_ack_loss_delivers_each_record_once() -> None:
    """With half the acknowledgements lost (seeded), retrying each record under one key until
    answered stores every record exactly once; each lost ack costs one extra request."""

    async def deliver(session: aiohttp.ClientSession, number: int) -> int:
        for attempt in range(1, 50):
            try:
                async with session.post("/ingest", json={"id": number},
                                        headers={"Idempotency-Key": f"rec-{number}"}) as r:
                    assert r.status in (200, 201)
                    return attempt
            except aiohttp.ClientError:
                continue
        raise AssertionError("never acknowledged")

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        attempts = [await deliver(session, n) for n in range(20)]
        records = await _get_json(session, "/ingest/records")
        assert records["ids"] == list(range(20)) and records["keys"] == 20
        lost = server.stats.faults["ack_loss"]
        assert lost == sum(attempts) - 20 > 0
        assert records["duplicates"] == lost
        log = (await _get_json(session, "/stats/requests", path="/ingest"))["requests"]
        per_key = Counter(entry["idempotency_key"] for entry in log)
        assert [per_key[f"rec-{n}"] for n in range(20)] == attempts

    run_against(check, _always(ack_loss=0.5))


def test_request_log_records_each_request_with_its_fields() -> None:
    """/stats/requests lists method, path, raw query, status, fault, client, key and whether
    credentials were sent, with arrival and end times from the server's start."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async with session.get("/geo?zip=12345&fault_429=1&fault_retry_after=0",
                               headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 429
        async with session.post("/ingest", json={"id": 1},
                                headers={"Idempotency-Key": "k1"}) as r:
            assert r.status == 201
        with pytest.raises(aiohttp.ClientError):
            async with session.post("/score", params={"fault_reset": "1"}, json={"id": 1}):
                pass
        log = (await _get_json(session, "/stats/requests"))["requests"]
        assert [sorted(entry) for entry in log] == [sorted(
            ["t", "end", "method", "path", "query", "status", "fault", "client",
             "idempotency_key", "authorization"])] * 3
        limited, ingested, reset = log
        assert {k: limited[k] for k in ("method", "path", "query", "status", "fault",
                                        "client", "idempotency_key", "authorization")} == {
            "method": "GET", "path": "/geo", "query": "zip=12345&fault_429=1&fault_retry_after=0",
            "status": 429, "fault": "429", "client": "127.0.0.1", "idempotency_key": None,
            "authorization": True}
        assert (ingested["method"], ingested["status"], ingested["fault"]) == ("POST", 201, None)
        assert (ingested["idempotency_key"], ingested["authorization"]) == ("k1", False)
        assert (reset["status"], reset["end"], reset["fault"]) == (None, None, "reset")
        assert 0 <= limited["t"] <= limited["end"] <= ingested["t"] <= ingested["end"]
        assert ingested["end"] <= reset["t"]

    run_against(check)


def test_request_log_filters_by_path_and_since() -> None:
    """?path= keeps one exact path; ?since=T keeps requests that arrived at T or later."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        for zip_code in ("11111", "22222", "33333"):
            await _get_json(session, "/geo", zip=zip_code)
            await _get_json(session, "/items", per_page="1")
        geo = (await _get_json(session, "/stats/requests", path="/geo"))["requests"]
        assert [entry["query"] for entry in geo] == ["zip=11111", "zip=22222", "zip=33333"]
        later = await _get_json(session, "/stats/requests", since=repr(geo[1]["t"]))
        assert [entry["path"] for entry in later["requests"]] == ["/geo", "/items"] * 2
        both = await _get_json(session, "/stats/requests", path="/geo", since=repr(geo[1]["t"]))
        assert both["requests"] == geo[1:]
        async with session.get("/stats/requests", params={"since": "soon"}) as r:
            assert r.status == 400

    run_against(check)


def test_request_log_skips_the_observers_and_reset_clears_everything() -> None:
    """/stats, /stats/requests, /stats/reset, /healthz and /ingest/records are not logged;
    /stats/reset empties the log and the ingest records."""

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        await _get_json(session, "/geo", zip="12345")
        async with session.post("/ingest", json={"id": 1}, headers={"Idempotency-Key": "a"}):
            pass
        for path in ("/stats", "/healthz", "/ingest/records", "/stats/requests"):
            await _get_json(session, path)
        log = (await _get_json(session, "/stats/requests"))["requests"]
        assert [entry["path"] for entry in log] == ["/geo", "/ingest"]
        async with session.post("/stats/reset") as r:
            assert r.status == 200
        assert (await _get_json(session, "/stats/requests"))["requests"] == []
        assert await _get_json(session, "/ingest/records") == {
            "ids": [], "keys": 0, "duplicates": 0, "unkeyed": 0}
        async with session.post("/ingest", json={"id": 1}, headers={"Idempotency-Key": "a"}) as r:
            assert r.status == 201  # the key was forgotten too

    run_against(check)


def test_request_log_is_a_ring_buffer_timed_by_an_injected_clock() -> None:
    """Only the newest maxlen requests are kept; t is measured from the log's creation."""
    now = [100.0]
    log = RequestLog(maxlen=2, clock=lambda: now[0])
    for path in ("/a", "/b", "/c"):
        now[0] += 1.0
        entry = [now[0] - 100.0, None, "GET", path, "", None, None, "127.0.0.1", None, False]
        log.entries.append(entry)
        log.finish(entry, 200 if path != "/c" else None)
    assert [(e["path"], e["t"], e["end"], e["status"]) for e in log.select()] == [
        ("/b", 2.0, 2.0, 200), ("/c", 3.0, None, None)]
    assert [e["path"] for e in log.select(since=2.5)] == ["/c"]


def test_max_in_flight_by_path_groups_file_downloads() -> None:
    """Concurrent downloads of different files count together under /files."""
    stats = Stats()
    groups = [stats.enter(path) for path in ("/files/a.bin", "/files/b.bin", "/geo")]
    stats.leave(groups[0], 200)
    stats.leave(stats.enter("/files/c.bin"), None)
    assert stats.as_dict()["max_in_flight_by_path"] == {"/files": 2, "/geo": 1}
    assert stats.by_status == {"200": 1}

    async def check(session: aiohttp.ClientSession, server: DemoApiServer) -> None:
        async def download(name: str) -> None:
            async with session.get(f"/files/{name}", params={"fault_latency": "300ms"}) as r:
                await r.read()

        await asyncio.gather(*(download(f"{n}.bin") for n in (10, 20, 30)))
        await _get_json(session, "/geo", zip="12345")
        by_path = (await _get_json(session, "/stats"))["max_in_flight_by_path"]
        assert set(by_path) == {"/files", "/geo"}
        assert 2 <= by_path["/files"] <= 3 and by_path["/geo"] == 1

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
