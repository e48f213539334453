"""The ``http`` step facing hostile input: redirects checked on every hop, destinations from
data refused before connecting, secrets never shown nor carried to another origin, responses
capped after decompression. Same harness as ``test_http_step.py`` (``http_support``).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from .http_support import (
    RETRY_3,
    Api,
    AppServer,
    Served,
    query_of,
    run_step,
)


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api().start()
    try:
        yield server
    finally:
        server.stop()


def test_a_compressed_response_is_capped_by_its_decompressed_size(write: Any) -> None:
    """A gzip bomb (8 MiB of zeros in ~8 KiB, with its Content-Length) is a dead letter
    ResponseTooLarge under a 1 MiB cap, whatever its compressed size says; a small gzipped
    answer is decompressed and kept. One request per record."""
    bomb = gzip.compress(b"0" * (8 << 20))
    small = gzip.compress(b'{"ok": true}')
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        body = bomb if request.path == "/bomb" else small
        return web.Response(body=body, content_type="application/json",
                            headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/{name}", answer)
    server = Served(lambda: AppServer(app)).start()
    try:
        records = [{"id": 1, "name": "bomb"}, {"id": 2, "name": "small"}]
        run = run_step(write, {"url": server.url("/{name}"), "into": "body",
                               "max_response_bytes": "1MiB", "retry": RETRY_3}, records)
    finally:
        server.stop()
    assert len(bomb) < 1 << 20
    dead = run.dead_by_id()
    assert set(dead) == {1}
    assert dead[1]["error"] == "ResponseTooLarge"
    assert "over max_response_bytes (1048576)" in dead[1]["message"]
    assert dead[1]["attempts"] == 1
    assert run.out_by_id()[2]["body"] == {"ok": True}
    assert sorted(seen) == ["/bomb", "/small"]


# -- 7. redirects ------------------------------------------------------------------------------
def test_redirects_are_checked_on_every_hop(write: Any, api: Api) -> None:
    """A redirect to the metadata address is refused (RefusedDestination, never requested);
    redirects to another path on the same 127.0.0.1 server, absolute or relative, are
    followed and answered."""
    records = [{"id": 1, "to": "http://169.254.169.254/latest"},
               {"id": 2, "to": api.url("/geo?zip=12345")},
               {"id": 3, "to": "/geo?zip=54321"}]
    run = run_step(write, {"url": api.url("/redirect"), "params": {"to": "{to}"},
                           "fields": {"city": "city", "zip": "zip"}, "retry": RETRY_3},
                   records)
    stats = api.stats()
    assert stats["by_path"] == {"/redirect": 3, "/geo": 2}
    assert stats["requests"] == 5
    dead = run.dead_by_id()
    assert set(dead) == {1}
    assert dead[1]["error"] == "RefusedDestination"
    assert dead[1]["attempts"] == 1
    assert "refused http://169.254.169.254/latest" in dead[1]["message"]
    assert "link-local" in dead[1]["message"]
    out = run.out_by_id()
    assert out[2]["city"] == api.call("/geo?zip=12345")["city"]
    assert out[3]["zip"] == "54321"


def test_a_redirect_chain_over_max_redirects_is_a_dead_letter(write: Any, api: Api) -> None:
    """/redirect/chain?n=20 with max_redirects 5: TooManyRedirects after exactly 6 requests
    (the first and 5 redirects), not retried; n=3 is followed to its answer (4 requests)."""
    records = [{"id": 1, "n": 20}, {"id": 2, "n": 3}]
    run = run_step(write, {"url": api.url("/redirect/chain"), "params": {"n": "{n}"},
                           "max_redirects": 5, "into": "answer", "retry": RETRY_3}, records)
    dead = run.dead_by_id()
    assert set(dead) == {1}
    assert dead[1]["error"] == "TooManyRedirects"
    assert "more than 5 redirects" in dead[1]["message"]
    assert dead[1]["attempts"] == 1
    assert run.out_by_id()[2]["answer"] == {"ok": True}
    hops = [int(query_of(e)["n"]) for e in api.log("/redirect/chain")]
    assert sorted(hops) == sorted([20, 19, 18, 17, 16, 15, 3, 2, 1, 0])


# -- 8. URLs from data -------------------------------------------------------------------------
def test_urls_from_data_are_refused_before_connecting(write: Any, api: Api) -> None:
    """`url: "{url}"`: the metadata address, loopback (by IP, decimal, hex and name), and
    file:// are refused before any connection: the server saw nothing, every record is a
    RefusedDestination dead letter with the reason; `allow_hosts: [127.0.0.1]` lets the
    loopback one through (and only it)."""
    port = api.port
    records = [{"id": 1, "url": "http://169.254.169.254/x"},
               {"id": 2, "url": f"http://127.0.0.1:{port}/geo?zip=12345"},
               {"id": 3, "url": f"http://2130706433:{port}/geo?zip=12345"},
               {"id": 4, "url": f"http://0x7f000001:{port}/geo?zip=12345"},
               {"id": 5, "url": f"http://localhost:{port}/geo?zip=12345"},
               {"id": 6, "url": "file:///etc/passwd"}]
    step = {"url": "{url}", "into": "geo", "retry": RETRY_3}
    run = run_step(write, step, records, name="default")
    assert not run.out
    dead = run.dead_by_id()
    assert all(letter["error"] == "RefusedDestination" for letter in dead.values())
    assert all(letter["attempts"] == 1 for letter in dead.values())
    assert "169.254.169.254 is link-local (cloud metadata)" in dead[1]["message"]
    for i in (2, 3, 4):
        assert "127.0.0.1 is private (loopback) and the URL comes from data" in \
            dead[i]["message"], dead[i]
    assert "localhost" in dead[5]["message"]
    assert "scheme 'file'" in dead[6]["message"]
    assert api.stats()["requests"] == 0
    assert api.log() == []

    allowed = [records[0], records[1], records[5]]
    run = run_step(write, {**step, "allow_hosts": ["127.0.0.1"]}, allowed, name="allowed")
    assert set(run.dead_by_id()) == {1, 6}
    assert run.out_by_id()[2]["geo"]["zip"] == "12345"
    assert api.stats()["requests"] == 1
    assert [query_of(e) for e in api.log("/geo")] == [{"zip": "12345"}]


# -- 12. secrets -------------------------------------------------------------------------------
CANARY = "hr-canary-6f1d93b0c2e4"


@pytest.mark.parametrize("flags", [(), ("-vv",), ("-vv", "--log-format", "json")],
                         ids=["default", "verbose", "json-logs"])
def test_a_secret_header_never_shows_and_stays_on_its_host(
        write: Any, api: Api, flags: tuple[str, ...]) -> None:
    """`Authorization: Bearer ${API_TOKEN}`: the canary appears in no output, log line, dead
    letter or file of the run (a 400, a refused redirect); the server saw the header on its
    own host, and not after a redirect to another host (localhost, allowed)."""
    records = [{"id": 1, "to": "/geo?zip=12a45"},  # same host, 400
               {"id": 2, "to": "http://169.254.169.254/latest"},  # refused
               {"id": 3, "to": f"http://localhost:{api.port}/geo?zip=12345"},  # other host
               {"id": 4, "to": "/geo?zip=54321"}]
    run = run_step(write, {"url": api.url("/redirect"), "params": {"to": "{to}"},
                           "headers": {"Authorization": "Bearer ${API_TOKEN}"},
                           "allow_hosts": ["localhost"], "fields": {"city": "city"}},
                   records, args=flags, env={"API_TOKEN": CANARY})
    dead = run.dead_by_id()
    assert set(dead) == {1, 2}
    assert dead[1]["error"] == "HttpStatusError" and "HTTP 400" in dead[1]["message"]
    assert dead[2]["error"] == "RefusedDestination"
    assert set(run.out_by_id()) == {3, 4}
    assert CANARY not in run.result.stdout
    assert CANARY not in run.result.stderr
    for path in run.root.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    log = api.log()
    assert len(log) == 7  # 4 redirects, 3 answers
    assert all(e["authorization"] for e in log if e["path"] == "/redirect")
    geo = {query_of(e)["zip"]: e for e in log if e["path"] == "/geo"}
    assert geo["12a45"]["authorization"] and geo["54321"]["authorization"]
    assert geo["12345"]["authorization"] is False  # localhost: another host, no credentials


def test_credentials_do_not_follow_a_redirect_to_another_port(write: Any, api: Api) -> None:
    """A redirect from the pipeline's server to another port on the same host (another
    origin: another service, so a destination from data) is refused unless allowed; allowed,
    it is followed without the Authorization header; a redirect within the same origin keeps
    it."""
    other = Api().start()
    try:
        records = [{"id": 1, "to": other.url("/geo?zip=12345")},
                   {"id": 2, "to": api.url("/geo?zip=54321")}]
        options = {"url": api.url("/redirect"), "params": {"to": "{to}"},
                   "headers": {"Authorization": "Bearer ${API_TOKEN}"},
                   "fields": {"city": "city"}}
        refused = run_step(write, options, records, env={"API_TOKEN": CANARY})
        assert [(d["record"]["id"], d["error"]) for d in refused.dead] == [
            (1, "RefusedDestination")]
        assert other.log() == []
        api.reset()
        run = run_step(write, {**options, "allow_hosts": ["127.0.0.1"]}, records,
                       env={"API_TOKEN": CANARY})
        elsewhere = other.log()
    finally:
        other.stop()
    assert not run.dead and len(run.out) == 2
    assert [(e["path"], e["authorization"]) for e in elsewhere] == [("/geo", False)]
    here = api.log()
    assert len(here) == 3
    assert all(e["authorization"] for e in here)


def test_a_token_echoed_in_an_error_response_is_redacted(write: Any) -> None:
    """An API that echoes the credential in its 401 body (as many do for a bad key) does not
    put it in the dead letter, even when the variable's name does not look secret: the
    Authorization header's value and its token are both hidden."""
    seen: list[bool] = []

    async def echo(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append(bool(auth))
        return web.json_response({"error": f"token {auth.removeprefix('Bearer ')} is not "
                                  f"valid (header: {auth})"}, status=401)

    app = web.Application()
    app.router.add_get("/me", echo)
    server = Served(lambda: AppServer(app)).start()
    try:
        run = run_step(write, {"url": server.url("/me"), "into": "me",
                               "headers": {"Authorization": "Bearer ${GITHUB_PAT}"}},
                       [{"id": 1}], env={"GITHUB_PAT": CANARY})
    finally:
        server.stop()
    assert seen == [True]
    assert len(run.dead) == 1
    letter = run.dead[0]
    assert letter["error"] == "HttpStatusError"
    assert "HTTP 401" in letter["message"] and "is not valid" in letter["message"]
    assert CANARY not in json.dumps(letter)
    assert CANARY not in run.result.stdout + run.result.stderr


