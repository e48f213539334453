"""The ``http`` step end to end: real ``headrace run`` subprocesses against the real demo API
(served in-process on 127.0.0.1, port 0, seeded), counting outcomes on both sides.

Every test checks the ledger: records in == out + dead (from the run's JSON summary, the
output file and the dead-letter file), and what the server saw (``/stats`` and the request log
at ``/stats/requests``) against what the records cost: one request per record plus one per
retry, and none at all for a destination refused before connecting.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import run_cli
from .http_support import (
    RETRY_3,
    RETRY_5,
    SLACK,
    Api,
    by_param,
    closed_port,
    query_of,
    run_step,
    zips,
)


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api().start()
    try:
        yield server
    finally:
        server.stop()


# -- 1. enrichment -----------------------------------------------------------------------------
def test_enrichment_matches_the_servers_answers_one_request_per_record(write: Any,
                                                                       api: Api) -> None:
    """N records through /geo get the server's deterministic answer in `geo` and `city`; the
    server saw exactly N requests, one per zip, all 200."""
    codes = zips(25)
    records = [{"id": i, "zip": z} for i, z in enumerate(codes)]
    run = run_step(write, {"url": api.url("/geo"), "params": {"zip": "{zip}"}, "into": "geo",
                           "fields": {"city": "city"}}, records)
    stats = api.stats()
    log = api.log("/geo")
    assert stats["requests"] == len(records) == len(log)
    assert stats["by_status"] == {"200": len(records)}
    assert sorted(query_of(e)["zip"] for e in log) == sorted(codes)
    assert run.summary["records_out"] == len(records) and not run.dead
    assert run.step["retries"] == 0
    for row in run.out:
        expected = api.call(f"/geo?zip={row['zip']}")
        assert row["geo"] == expected
        assert row["city"] == expected["city"]
        assert row["zip"] == expected["zip"]  # a string: leading zeros kept


# -- 2. 5xx ------------------------------------------------------------------------------------
def test_5xx_are_retried_and_requests_equal_the_attempts(write: Any, api: Api) -> None:
    """With 30% injected 5xx (and 100% for three records), each record ends in out or dead;
    the server saw exactly one request per attempt (N + the engine's retries), a kept record's
    earlier attempts were all 5xx, and a dead one's attempts (5) are all in the log."""
    always = {3, 11, 17}
    records = [{"id": i, "zip": z, "fe": "1" if i in always else "0.3"}
               for i, z in enumerate(zips(24, seed=2))]
    run = run_step(write, {"url": api.url("/geo"), "retry": RETRY_5,
                           "params": {"zip": "{zip}", "fault_error": "{fe}"}}, records)
    log = api.log("/geo")
    per_zip = by_param(log, "zip")
    assert api.stats()["requests"] == len(log) == len(records) + run.step["retries"]
    assert run.step["retries"] > 0
    dead = run.dead_by_id()
    assert always <= set(dead)
    attempts_seen = 0
    for record in records:
        seen = per_zip[record["zip"]]
        assert 1 <= len(seen) <= 5
        assert all(e["status"] in (500, 502, 503) for e in seen[:-1])
        if record["id"] in dead:
            letter = dead[record["id"]]
            assert letter["attempts"] == len(seen) == 5
            assert letter["error"] == "RetryableStatus"
            assert letter["message"].startswith(
                "gave up after 5 attempts: RetryableStatus: HTTP 50")
            assert seen[-1]["status"] in (500, 502, 503)
            attempts_seen += letter["attempts"]
        else:
            assert seen[-1]["status"] == 200
            attempts_seen += len(seen)
    assert attempts_seen == len(log)


# -- 3. 429 + Retry-After ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_429_retries_wait_for_retry_after_and_attempts_are_capped(
        write: Any, api: Api, fmt: str) -> None:
    """No retry of a zip reaches the server before the Retry-After of the 429 it follows
    (seconds: counted from the 429's answer; HTTP-date: that date, which the server rounds
    down to a whole second); at most 3 attempts per record; always-429 records are
    dead-lettered after 3 attempts with the status in the reason."""
    always = {0, 5}
    records = [{"id": i, "zip": z, "p": "1" if i in always else "0.5"}
               for i, z in enumerate(zips(10, seed=3))]
    run = run_step(write, {"url": api.url("/geo"), "retry": RETRY_3, "params": {
        "zip": "{zip}", "fault_429": "{p}", "fault_retry_after": "1",
        "fault_retry_after_format": fmt}}, records)
    log = api.log("/geo")
    assert len(log) == len(records) + run.step["retries"] == api.stats()["requests"]
    per_zip = by_param(log, "zip")
    checked = 0
    for seen in per_zip.values():
        assert len(seen) <= 3
        for before, after in itertools.pairwise(seen):
            assert before["status"] == 429  # only a 429 is followed by another request
            if fmt == "seconds":
                earliest = before["end"] + 1.0
            else:  # formatdate(now + 1) truncates: the date is floor(wall + 1) at answer time
                earliest = api.server_t(math.floor(api.wall(before["t"]) + 1.0))
            assert after["t"] >= earliest - SLACK, (before, after)
            checked += 1
    assert checked == run.step["retries"] > 0
    dead = run.dead_by_id()
    assert always <= set(dead)
    for letter in dead.values():
        assert letter["attempts"] == 3 == len(per_zip[letter["record"]["zip"]])
        assert letter["error"] == "RetryableStatus"
        assert "HTTP 429 from GET" in letter["message"]
        assert "Retry-After" in letter["message"]
    for row in run.out:
        assert per_zip[row["zip"]][-1]["status"] == 200


# -- 4. timeouts and resets --------------------------------------------------------------------
def test_timeouts_and_resets_are_retried_then_dead_lettered(write: Any, api: Api) -> None:
    """A server that never answers is cut off by the step's 300 ms timeout on every attempt:
    dead letter TimeoutError after 3 attempts, each attempt a request the server saw; a
    connection reset on every attempt is retried the same way; clean records pass."""
    timeouts, resets = {1, 4, 7}, {2, 8}
    records = [{"id": i, "zip": z, "ft": "1" if i in timeouts else "0",
                "fr": "1" if i in resets else "0"} for i, z in enumerate(zips(10, seed=4))]
    run = run_step(write, {"url": api.url("/geo"), "timeout": "300ms", "retry": RETRY_3,
                           "params": {"zip": "{zip}", "fault_timeout": "{ft}",
                                      "fault_reset": "{fr}"}}, records)
    per_zip = by_param(api.log("/geo"), "zip")
    dead = run.dead_by_id()
    assert set(dead) == timeouts | resets
    assert set(run.out_by_id()) == {r["id"] for r in records} - timeouts - resets
    for i in timeouts:
        letter = dead[i]
        assert letter["error"] == "TimeoutError"
        assert letter["message"].startswith("gave up after 3 attempts: TimeoutError")
        assert letter["attempts"] == 3
        seen = per_zip[letter["record"]["zip"]]
        assert len(seen) == 3
        assert all(e["fault"] == "timeout" and e["status"] is None for e in seen)
    for i in resets:
        letter = dead[i]
        assert letter["attempts"] == 3
        assert letter["message"].startswith("gave up after 3 attempts: ")
        assert letter["error"] in ("ServerDisconnectedError", "ClientOSError"), letter
        seen = per_zip[letter["record"]["zip"]]
        # aiohttp itself resends an idempotent request once when a reused connection drops
        assert 3 <= len(seen) <= 6
        assert all(e["fault"] == "reset" and e["status"] is None for e in seen)
    for row in run.out:
        assert [e["status"] for e in per_zip[row["zip"]]] == [200]
    assert run.step["retries"] == 2 * (len(timeouts) + len(resets))


def test_a_reset_connection_is_retried_and_the_record_kept(write: Any, api: Api) -> None:
    """One record whose requests are reset half the time (the seeded dice reset the first
    two) is retried until answered and reaches the output; the others cost one request."""
    records = [{"id": i, "zip": z, "fr": "0.5" if i == 0 else "0"}
               for i, z in enumerate(zips(5, seed=5))]
    run = run_step(write, {"url": api.url("/geo"), "retry": RETRY_5,
                           "params": {"zip": "{zip}", "fault_reset": "{fr}"}}, records)
    assert not run.dead
    per_zip = by_param(api.log("/geo"), "zip")
    flaky = per_zip[records[0]["zip"]]
    assert [e["fault"] for e in flaky] == ["reset", "reset", None]
    assert flaky[-1]["status"] == 200
    assert 1 <= run.step["retries"] <= 2  # aiohttp may have resent one reset itself
    assert 0 in run.out_by_id()
    for record in records[1:]:
        assert len(per_zip[record["zip"]]) == 1


# -- 5. malformed JSON -------------------------------------------------------------------------
def test_malformed_json_is_a_dead_letter_naming_the_url_unless_read_as_text(
        write: Any, api: Api) -> None:
    """A 200 with a broken JSON body is a dead letter NotJson naming the URL, not retried;
    with `response: text` the same answers are kept as text."""
    records = [{"id": i, "zip": z} for i, z in enumerate(zips(4, seed=6))]
    step = {"url": api.url("/geo"), "retry": RETRY_3, "into": "body",
            "params": {"zip": "{zip}", "fault_malformed": "1"}}
    run = run_step(write, step, records, name="as-json")
    assert len(run.dead) == len(records) and not run.out
    for letter in run.dead:
        assert letter["error"] == "NotJson"
        assert letter["attempts"] == 1
        assert f"GET {api.url('/geo')}" in letter["message"]
        assert "is not JSON" in letter["message"]
    assert api.stats()["requests"] == len(records)
    assert api.stats()["faults"]["malformed"] == len(records)

    api.reset()
    run = run_step(write, {**step, "response": "text"}, records, name="as-text")
    assert not run.dead and len(run.out) == len(records)
    for row in run.out:
        assert isinstance(row["body"], str)
        assert row["body"].startswith('{"zip":"' + row["zip"][:1])
        assert row["body"].endswith("<!-- not json")
    assert api.stats()["requests"] == len(records)


# -- 6. response size cap ----------------------------------------------------------------------
def test_a_response_over_max_response_bytes_is_a_dead_letter(write: Any, api: Api) -> None:
    """Answers over the 4 KiB cap are dead letters ResponseTooLarge naming the cap, not
    retried: a 1000-item page read as JSON, a 5000-byte file read as text; a 2-item page and
    a 1000-byte file under the cap are kept. One request per record."""
    pages = [{"id": 1, "per_page": 1000}, {"id": 2, "per_page": 2}]
    run = run_step(write, {"url": api.url("/items"), "params": {"per_page": "{per_page}"},
                           "into": "page", "max_response_bytes": "4KiB", "retry": RETRY_3},
                   pages, name="items")
    assert set(run.dead_by_id()) == {1}
    assert len(run.out_by_id()[2]["page"]["items"]) == 2

    files = [{"id": 3, "name": "5000.bin"}, {"id": 4, "name": "1000.bin"}]
    run2 = run_step(write, {"url": api.url("/files/{name}"), "response": "text",
                            "into": "body", "max_response_bytes": "4KiB", "retry": RETRY_3},
                    files, name="files")
    assert set(run2.dead_by_id()) == {3}
    assert isinstance(run2.out_by_id()[4]["body"], str)
    for letter in run.dead + run2.dead:
        assert letter["error"] == "ResponseTooLarge"
        assert "over max_response_bytes (4096)" in letter["message"]
        assert letter["attempts"] == 1
    stats = api.stats()
    assert stats["requests"] == len(pages) + len(files)
    assert stats["by_path"] == {"/items": 2, "/files/5000.bin": 1, "/files/1000.bin": 1}


@pytest.mark.parametrize("target", ["dns", "refused"])
def test_unreachable_hosts_are_retried_then_dead_lettered(
        write: Any, api: Api, target: str) -> None:
    """A host name that does not resolve and a closed local port (both written in the
    pipeline, so allowed) are transient errors: retried 3 times, then dead letters whose
    reason names the host; the run completes."""
    if target == "dns":
        url, host = "http://does-not-exist.invalid/geo", "does-not-exist.invalid"
    else:
        port = closed_port()
        url, host = f"http://127.0.0.1:{port}/geo", f"127.0.0.1:{port}"
    records = [{"id": i, "zip": z} for i, z in enumerate(zips(3, seed=7))]
    run = run_step(write, {"url": url, "params": {"zip": "{zip}"}, "timeout": "5s",
                           "retry": RETRY_3}, records)
    assert not run.out and len(run.dead) == len(records)
    for letter in run.dead:
        assert letter["attempts"] == 3
        assert letter["message"].startswith("gave up after 3 attempts: ClientConnector")
        assert host in letter["message"]
    assert run.step["retries"] == 2 * len(records)
    assert api.stats()["requests"] == 0


# -- 10. missing fields ------------------------------------------------------------------------
def test_a_template_field_the_input_lacks_is_a_config_error(write: Any, api: Api) -> None:
    """`headrace validate` exits 2 with a one-line error naming the step and the field."""
    write("in.jsonl", '{"id": 1, "zip": "12345"}\n')
    path = write("p.yaml", f"""
        version: 1
        name: missing
        source: {{use: jsonl, path: in.jsonl}}
        steps:
          - {{id: geo, use: http, url: "{api.url('/geo')}", params: {{zip: "{{zipcode}}"}}}}
        sink: {{use: jsonl, path: out/o.jsonl}}
        """)
    result = run_cli("validate", str(path))
    assert result.code == 2, result
    assert "step 'geo'" in result.stderr
    assert "'zipcode'" in result.stderr
    assert "fields available: id, zip" in result.stderr
    result = run_cli("run", str(path), "--json")
    assert result.code == 2
    assert api.stats()["requests"] == 0


def test_a_record_missing_a_template_field_is_a_dead_letter(write: Any, api: Api) -> None:
    """A record whose field is null or absent is a dead letter naming the field, sent nowhere;
    the others are answered."""
    records = [{"id": 1, "zip": "12345"}, {"id": 2, "zip": None}, {"id": 3},
               {"id": 4, "zip": "54321"}]
    run = run_step(write, {"url": api.url("/geo"), "params": {"zip": "{zip}"},
                           "fields": {"city": "city"}}, records)
    dead = run.dead_by_id()
    assert set(dead) == {2, 3}
    for letter in dead.values():
        assert letter["error"] == "MissingField"
        assert letter["message"] == "record has no field 'zip'"
    assert set(run.out_by_id()) == {1, 4}
    assert sorted(query_of(e)["zip"] for e in api.log("/geo")) == ["12345", "54321"]


# -- 11. concurrency ---------------------------------------------------------------------------
@pytest.mark.parametrize(("per_host", "max_in_flight", "bound"),
                         [(4, 64, 4), (16, 3, 3)], ids=["per_host-4", "max_in_flight-3"])
def test_concurrency_limits_hold_at_the_server(write: Any, api: Api, per_host: int,
                                               max_in_flight: int, bound: int) -> None:
    """With 50 ms per answer, the server never sees more requests at once than the tighter
    of per_host and max_in_flight, and does see more than one. Waiting for a place (up to
    ~0.7 s for the last of 40 records through 3 places) does not count against the step's
    300 ms timeout: every record is answered with one request, none retried."""
    records = [{"id": i, "zip": z} for i, z in enumerate(zips(40, seed=8))]
    run = run_step(write, {"url": api.url("/geo"), "per_host": per_host,
                           "max_in_flight": max_in_flight, "timeout": "300ms",
                           "params": {"zip": "{zip}", "fault_latency": "50ms"}}, records)
    assert len(run.out) == len(records)
    assert run.step["retries"] == 0
    stats = api.stats()
    assert stats["requests"] == len(records)
    assert 1 < stats["max_in_flight"] <= bound
    assert stats["max_in_flight_by_path"]["/geo"] == stats["max_in_flight"]


# -- 13. grouped requests ----------------------------------------------------------------------
def test_grouped_requests_send_one_post_per_50_records(write: Any, api: Api) -> None:
    """`batch_size: 50`: 120 records cost ceil(120/50) = 3 POSTs to /score/batch, each record
    gets the score /score gives its key, and a record without a key fails alone (a dead
    letter naming the field) without failing its group."""
    records = [{"id": i, "key": f"k{i}" if i != 7 else None} for i in range(120)]
    run = run_step(write, {"url": api.url("/score/batch"), "method": "POST",
                           "json": {"id": "{key}"}, "batch_size": 50, "into": "score"},
                   records)
    stats = api.stats()
    assert stats["requests"] == math.ceil(len(records) / 50) == 3
    assert stats["by_path"] == {"/score/batch": 3}
    assert stats["by_status"] == {"200": 3}
    dead = run.dead_by_id()
    assert set(dead) == {7}
    assert dead[7]["error"] == "MissingField"
    assert dead[7]["message"] == "record has no field 'key'"
    assert len(run.out) == len(records) - 1
    for row in run.out:
        assert row["score"] == api.call("/score", {"id": row["key"]})


# -- 14. adaptive concurrency ------------------------------------------------------------------
def _requests_during_retry_after(log: list[dict[str, Any]], retry_after: float,
                                  margin: float) -> int:
    """Requests that arrived while some 429's Retry-After ran, from ``margin`` after that 429
    (requests already on their way when the client read it) to the end of the wait."""
    ends = [e["end"] for e in log if e["status"] == 429]
    return sum(1 for e in log for end in ends
               if end + margin < e["t"] < end + retry_after - SLACK)


def test_adaptive_concurrency_backs_off_under_429s(write: Any, api: Api) -> None:
    """Against 429s with Retry-After 1 s (always for two records, 5% for the rest) and 20 ms
    answers, per_host 16: both runs complete with every record accounted for and every retry
    after its Retry-After. Without `adaptive` the server sees up to 16 requests at once and
    other records go on during a Retry-After; with it, fewer at once (it starts at 16 // 4
    and halves on a 429), and nothing reaches the host while a Retry-After runs."""
    always = {0, 1}
    records = [{"id": i, "zip": z, "p": "1" if i in always else "0.05"}
               for i, z in enumerate(zips(24, seed=9))]
    step = {"url": api.url("/geo"), "per_host": 16, "retry": RETRY_3,
            "params": {"zip": "{zip}", "fault_429": "{p}", "fault_retry_after": "1",
                       "fault_latency": "20ms"}}
    seen: dict[bool, dict[str, Any]] = {}
    for adaptive in (False, True):
        api.reset()
        run = run_step(write, {**step, "adaptive": adaptive}, records,
                       name=f"adaptive-{str(adaptive).lower()}")
        stats = api.stats()
        log = api.log("/geo")
        assert stats["requests"] == len(log) == len(records) + run.step["retries"]
        per_zip = by_param(log, "zip")
        for entries in per_zip.values():
            assert len(entries) <= 3
            for before, after in itertools.pairwise(entries):
                assert before["status"] == 429
                assert after["t"] >= before["end"] + 1.0 - SLACK
        dead = run.dead_by_id()
        assert always <= set(dead)
        for letter in dead.values():
            assert letter["attempts"] == 3 == len(per_zip[letter["record"]["zip"]])
            assert letter["error"] == "RetryableStatus"
        seen[adaptive] = {"max_in_flight": stats["max_in_flight"],
                          "429s": stats["faults"]["429"],
                          "during_retry_after": _requests_during_retry_after(log, 1.0, 0.25)}
    # What this run shows (printed with -s), e.g. {False: {'max_in_flight': 16, '429s': 9,
    # 'during_retry_after': 5}, True: {'max_in_flight': 6, '429s': 7, 'during_retry_after': 0}}
    print("adaptive observations:", seen)
    assert seen[False]["max_in_flight"] <= 16
    assert 1 <= seen[True]["max_in_flight"] < seen[False]["max_in_flight"], seen
    assert seen[True]["during_retry_after"] == 0, seen


def test_adaptive_pause_does_not_eat_the_timeout_or_the_attempts(write: Any, api: Api) -> None:
    """`adaptive` pauses the host for a 429's Retry-After (1 s); the records waiting out that
    pause are not timed out by the step's 300 ms timeout (the server answers at once) nor
    charged attempts: each is answered with one request; the always-429 record is dead after
    3 attempts, all of them requests the server saw."""
    records = [{"id": i, "zip": z, "p": "1" if i == 0 else "0"}
               for i, z in enumerate(zips(12, seed=10))]
    run = run_step(write, {"url": api.url("/geo"), "adaptive": True, "timeout": "300ms",
                           "retry": RETRY_3, "params": {"zip": "{zip}", "fault_429": "{p}",
                                                        "fault_retry_after": "1"}}, records)
    per_zip = by_param(api.log("/geo"), "zip")
    assert api.stats()["requests"] == len(records) + run.step["retries"]
    assert set(run.dead_by_id()) == {0}
    letter = run.dead[0]
    assert letter["error"] == "RetryableStatus", letter
    assert letter["attempts"] == 3 == len(per_zip[records[0]["zip"]])
    for record in records[1:]:
        assert [e["status"] for e in per_zip[record["zip"]]] == [200]
