"""The HTTP source, the ``urls`` source, the ``download`` step and sink and the ``http`` sink,
end to end: real ``headrace run`` subprocesses against a real ``headrace demo-api`` subprocess
on 127.0.0.1, counting outcomes on both sides.

Every test compares what the run says (its JSON summary: records in, out, dead; the output;
the dead letters) with what the server saw (``/stats``, the request log at ``/stats/requests``,
what ``/ingest`` stored at ``/ingest/records``). No test asserts a duration.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.cli._demo_api import file_bytes

from .conftest import CliResult, assert_accounted, read_jsonl, run_cli

HEADRACE = [sys.executable, "-m", "headrace"]
LISTENING = re.compile(r"headrace demo-api listening on (http://127\.0\.0\.1:(\d+))")
LOCAL_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
FAST_RETRY = "{attempts: 2, base: 1ms, cap: 2ms}"
ITEMS = 250
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the server ------------------------------------------------------------------------------

class DemoApi:
    """A ``headrace demo-api`` subprocess; ``restart`` brings it back on the same port,
    possibly with other flags (a failing endpoint, then a healthy one)."""

    def __init__(self, folder: Path, *flags: str, port: int = 0) -> None:
        self.folder = folder
        self.port = port
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self.start(*flags)

    def start(self, *flags: str) -> None:
        self._starts += 1
        log = self.folder / f"demo-api-{self._starts}.log"
        with log.open("wb") as handle:  # a file, not a pipe: a chatty server never blocks
            self.proc = subprocess.Popen(
                [*HEADRACE, "demo-api", "--port", str(self.port), *flags],
                stdout=subprocess.DEVNULL, stderr=handle, env={**os.environ, **LOCAL_ENV})
        deadline = time.monotonic() + 30
        while not (match := LISTENING.search(log.read_text(errors="replace"))):
            assert self.proc.poll() is None, f"demo-api exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"demo-api did not start: {log.read_text()}"
            time.sleep(0.02)
        self.url, self.port = match.group(1), int(match.group(2))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # this server's own pid: it shuts down and exits 0
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, *flags: str) -> None:
        self.stop()
        self.start(*flags)

    def _call(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(self.url + path, method=method)
        with _NO_PROXY.open(request, timeout=60) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._call("/stats/reset", "POST")

    def stats(self) -> dict[str, Any]:
        return dict(self._call("/stats"))

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        log = self._call("/stats/requests" + (f"?path={path}" if path else ""))["requests"]
        return list(log)

    def ingest(self) -> dict[str, Any]:
        return dict(self._call("/ingest/records"))


def queries(log: list[dict[str, Any]], name: str) -> list[str]:
    """The value of query parameter ``name`` in each logged request, in arrival order."""
    return [parse_qs(entry["query"], keep_blank_values=True).get(name, [""])[0]
            for entry in log]


def file_requests(api: DemoApi) -> int:
    return sum(n for path, n in api.stats()["by_path"].items() if path.startswith("/files/"))


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoApi]:
    api = DemoApi(tmp_path_factory.mktemp("demo-api"), "--items", str(ITEMS), "--seed", "11")
    yield api
    api.stop()


@pytest.fixture
def api(shared_api: DemoApi) -> DemoApi:
    """The module's server with its counters, request log and ingest store emptied."""
    shared_api.reset()
    return shared_api


@pytest.fixture
def own_api(tmp_path: Path) -> Iterator[Callable[..., DemoApi]]:
    """own_api(*flags, port=0): a server for this test alone, stopped when it ends."""
    servers: list[DemoApi] = []
    folder = tmp_path / "servers"
    folder.mkdir()

    def start(*flags: str, port: int = 0) -> DemoApi:
        servers.append(DemoApi(folder, *flags, port=port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


# -- runs --------------------------------------------------------------------------------------

def run(path: Path, *args: str, expect: int = 0, timeout: float = 120) -> CliResult:
    """``headrace run PATH --json ARGS``: the exit code expected, no traceback; a run that
    completed accounts for every record it read (a failed one leaves some for --resume)."""
    result = run_cli("run", str(path), "--json", *args, env=LOCAL_ENV, timeout=timeout)
    assert result.code == expect, result.stderr
    assert "Traceback" not in result.stderr
    if result.summary["status"] == "ok":
        assert_accounted(result.summary)
    return result


def parquet_ids(path: Path) -> list[int]:
    return [int(i) for i in pq.read_table(path).column("id").to_pylist()]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_file(name: str, size: int) -> str:
    """The SHA-256 the server announces for ``/files/<name>`` of ``size`` bytes."""
    return sha256(file_bytes(name, size))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ledger(folder: Path, name: str) -> tuple[str | None, dict[str, Any] | None]:
    """The run's status and last checkpoint; (None, None) until there is one."""
    path = folder / ".headrace" / "runs" / name / "ledger.sqlite"
    if not path.exists():
        return None, None
    try:
        con = sqlite3.connect(path, timeout=5)
        try:
            rows = con.execute("SELECT status, checkpoint FROM run").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # not made yet, or busy for a moment
        return None, None
    if not rows:
        return None, None
    status, checkpoint = rows[0]
    return status, json.loads(checkpoint) if checkpoint else None


# -- 1. the http source: every pagination style ----------------------------------------------

STYLES = {
    # style: (path, records, pagination, pages for 250 items)
    "page": ("/items", "items",
             "{style: page, size_param: per_page, size: 30, next: next_page}", 9),
    "offset": ("/items", "items",
               "{style: offset, size_param: limit, size: 40, next: next_offset}", 7),
    "cursor": ("/items", "items",
               "{style: cursor, size_param: limit, size: 40, next: next_cursor}", 7),
    "link": ("/items/linked", "null", "{style: link, size_param: per_page, size: 25}", 10),
}


@pytest.mark.parametrize("style", list(STYLES))
def test_source_reads_every_item_once_in_each_pagination_style(
        write, api: DemoApi, style: str) -> None:  # type: ignore[no-untyped-def]
    """Page numbers, offsets, cursors from the body and Link headers each read the collection
    into Parquet: ids 1..250 once each in order, one request per page, no page twice."""
    endpoint, records, pagination, pages = STYLES[style]
    path = write("p.yaml", f"""
        version: 1
        name: harvest-{style}
        source:
          use: http
          url: "{api.url}{endpoint}"
          records: {records}
          pagination: {pagination}
        sink: {{use: parquet, path: out/items.parquet}}
        """)
    summary = run(path).summary
    assert summary["status"] == "ok"
    assert summary["records_in"] == summary["records_out"] == ITEMS
    assert parquet_ids(path.parent / "out" / "items.parquet") == list(range(1, ITEMS + 1))
    log = api.requests(endpoint)
    assert len(log) == pages == api.stats()["requests"]
    assert all(entry["status"] == 200 for entry in log)
    assert len({entry["query"] for entry in log}) == pages  # no page asked for twice
    if style == "page":
        assert queries(log, "page") == [str(n) for n in range(1, pages + 1)]
    if style == "offset":
        assert queries(log, "offset") == [str(n) for n in range(0, ITEMS, 40)]
    if style == "cursor":
        assert queries(log, "cursor")[0] == ""  # then the server's opaque tokens


# -- 2. the http source: resume at the right page --------------------------------------------

HARVEST_PAGES = 40  # of 5 items: 200 items


def harvest_pipeline(write, api: DemoApi, name: str) -> Path:  # type: ignore[no-untyped-def]
    return write("p.yaml", f"""
        version: 1
        name: {name}
        source:
          use: http
          url: "{api.url}/items"
          params: {{fault_latency: 40ms}}
          records: items
          pagination: {{style: page, size_param: per_page, size: 5, next: next_page}}
          retry: {FAST_RETRY}
        sink: {{use: parquet, path: out/items.parquet}}
        runtime: {{checkpoint_interval: 50ms}}
        """)


def kill_after_page(path: Path, name: str, page: int) -> dict[str, Any]:
    """Start a run, SIGKILL it once its checkpoint is past ``page``; the checkpoint."""
    proc = subprocess.Popen([*HEADRACE, "run", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, **LOCAL_ENV})
    deadline = time.monotonic() + 60
    try:
        while True:
            _, checkpoint = ledger(path.parent, name)
            if checkpoint is not None and checkpoint["source"]["page"] >= page:
                break
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, f"no checkpoint past page {page}"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -9
    status, checkpoint = ledger(path.parent, name)  # read again: it may have moved on
    assert status == "running" and checkpoint is not None
    source = checkpoint["source"]
    committed = source["page"]
    assert page <= committed < HARVEST_PAGES and not source["done"], checkpoint
    assert source["next"] == committed + 1 and source["row"] == 5 * committed
    assert checkpoint["records"] == 5 * committed
    return checkpoint


def test_source_resumes_after_sigkill_at_the_page_after_the_checkpoint(
        write, own_api: Callable[..., DemoApi]) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL a slow harvest once a few pages are committed; --resume asks for the page after
    the last committed one first (not page 1), each later page once, and the output holds
    every id exactly once."""
    api = own_api("--items", str(5 * HARVEST_PAGES), "--seed", "3")
    path = harvest_pipeline(write, api, "harvest-kill")
    committed = kill_after_page(path, "harvest-kill", 4)["source"]["page"]
    api.reset()
    summary = run(path, "--resume").summary
    assert summary["status"] == "ok"
    assert summary["checkpoint"]["resumed_after"] == 5 * committed
    assert summary["records_in"] == summary["records_out"] == 5 * (HARVEST_PAGES - committed)
    pages = queries(api.requests("/items"), "page")
    assert pages == [str(n) for n in range(committed + 1, HARVEST_PAGES + 1)]
    ids = parquet_ids(path.parent / "out" / "items.parquet")
    assert ids == list(range(1, 5 * HARVEST_PAGES + 1))


def test_source_page_failing_for_good_fails_the_run_which_stays_resumable(
        write, own_api: Callable[..., DemoApi]) -> None:  # type: ignore[no-untyped-def]
    """After a kill, --resume meets an endpoint that answers every request with a 5xx: the
    next page is tried twice (retry attempts 2), the run exits 1 with a one-line error naming
    that page, and the checkpoint stays; a further --resume against the healthy endpoint
    starts at that page and completes with every id exactly once."""
    api = own_api("--items", str(5 * HARVEST_PAGES), "--seed", "5")
    path = harvest_pipeline(write, api, "harvest-fail")
    committed = kill_after_page(path, "harvest-fail", 3)["source"]["page"]
    failing = committed + 1

    api.restart("--items", str(5 * HARVEST_PAGES), "--error-rate", "1")
    failed = run(path, "--resume", expect=1)
    summary = failed.summary
    assert summary["status"] == "failed"
    assert summary["records_in"] == summary["records_out"] == summary["records_dead"] == 0
    assert summary["checkpoint"]["resumable"] is True
    error = summary["error"]
    assert "\n" not in error
    assert f"(page={failing})" in error and "gave up after 2 attempts" in error
    assert "--resume" in failed.stderr
    log = api.requests("/items")
    assert queries(log, "page") == [str(failing)] * 2
    assert all(entry["fault"] == "error" for entry in log)
    status, checkpoint = ledger(path.parent, "harvest-fail")
    assert status == "failed" and checkpoint is not None
    assert checkpoint["source"]["page"] == committed

    api.restart("--items", str(5 * HARVEST_PAGES))
    summary = run(path, "--resume").summary
    assert summary["status"] == "ok"
    assert summary["checkpoint"]["resumed_after"] == 5 * committed
    pages = queries(api.requests("/items"), "page")
    assert pages == [str(n) for n in range(failing, HARVEST_PAGES + 1)]
    ids = parquet_ids(path.parent / "out" / "items.parquet")
    assert ids == list(range(1, 5 * HARVEST_PAGES + 1))


# -- 3. the urls source ------------------------------------------------------------------------

def download_pipeline(write, source: str, name: str = "fetch", extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    return write("p.yaml", f"""
        version: 1
        name: {name}
        source: {source}
        sink:
          use: download
          dir: files
          allow_hosts: [127.0.0.1]
          checksum_header: X-Checksum-Sha256
          retry: {FAST_RETRY}
          {extra}
        dead_letter: {{path: out/dead.jsonl}}
        runtime: {{max_failures: 100}}
        """)


def check_files(folder: Path, sizes: dict[str, int]) -> None:
    """``folder`` holds exactly these files, each with the server's bytes; no temp files."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(sizes)
    for name, size in sizes.items():
        data = (folder / name).read_bytes()
        assert len(data) == size and sha256(data) == expected_file(name, size), name


def test_urls_source_reads_one_url_a_line(write, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """Blank lines (LF or CRLF) are skipped and hold no record, spaces around a URL are
    ignored; a URL that fails is a dead letter naming its line; each URL is fetched once."""
    lines = [f"{api.url}/files/101.bin", "", f"{api.url}/files/102.bin",
             f"{api.url}/files/103.bin\r", "\r", f"{api.url}/nope/x.bin",
             f"  {api.url}/files/104.bin  "]
    write("urls.txt", "\n".join(lines))  # and no newline after the last line
    path = download_pipeline(write, "{use: urls, path: urls.txt}")
    summary = run(path).summary
    assert (summary["records_in"], summary["records_out"], summary["records_dead"]) == (5, 4, 1)
    check_files(path.parent / "files", {f"{n}.bin": n for n in (101, 102, 103, 104)})
    dead = read_jsonl(path.parent / "out" / "dead.jsonl")
    assert [(d["position"]["line"], d["error"]) for d in dead] == [(6, "HttpStatusError")]
    assert "404" in dead[0]["message"]
    assert dead[0]["record"] == {"url": f"{api.url}/nope/x.bin"}
    assert api.stats()["by_path"] == {f"/files/{n}.bin": 1 for n in (101, 102, 103, 104)} | {
        "/nope/x.bin": 1}


URL_FILES = {  # format: (file, the urls source's options, column)
    "csv": ("in.csv", "", "url"),
    "jsonl": ("in.jsonl", ", column: link", "link"),
    "parquet": ("in.parquet", ", column: u", "u"),
}


def write_urls(folder: Path, fmt: str, column: str, urls: list[str]) -> None:
    table = pa.table({"id": list(range(len(urls))), column: urls})
    target = folder / URL_FILES[fmt][0]
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, target)
    elif fmt == "jsonl":
        target.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    else:
        pq.write_table(table, target)


@pytest.mark.parametrize("fmt", list(URL_FILES))
def test_urls_source_reads_a_column(write, tmp_path: Path, api: DemoApi, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """URLs from a CSV (default column `url`), JSONL (`column: link`) or Parquet (`column: u`)
    file: every URL fetched once, every file complete."""
    name, option, column = URL_FILES[fmt]
    numbers = [201, 202, 203, 204, 205]
    write_urls(tmp_path, fmt, column, [f"{api.url}/files/{n}.bin" for n in numbers])
    path = download_pipeline(write, f"{{use: urls, path: {name}{option}}}")
    summary = run(path).summary
    assert summary["records_in"] == summary["records_out"] == len(numbers)
    check_files(path.parent / "files", {f"{n}.bin": n for n in numbers})
    assert api.stats()["by_path"] == {f"/files/{n}.bin": 1 for n in numbers}


@pytest.mark.parametrize("fmt", list(URL_FILES))
def test_urls_source_missing_column_is_a_clear_error(  # type: ignore[no-untyped-def]
        write, tmp_path: Path, api: DemoApi, fmt: str) -> None:
    """A column the file does not have: exit 2 before any request, one line naming the
    file, the column and the columns there are."""
    name, _, column = URL_FILES[fmt]
    write_urls(tmp_path, fmt, column, [f"{api.url}/files/1.bin"])
    path = download_pipeline(write, f"{{use: urls, path: {name}, column: nope}}")
    result = run_cli("run", str(path), env=LOCAL_ENV)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{name} has no column 'nope'" in lines[0]
    assert f"columns: id, {column}" in lines[0]
    assert api.stats()["requests"] == 0
    assert not (path.parent / "files").exists() or not any((path.parent / "files").iterdir())


# -- 4. the download sink: 2,000 files, per_host 8 ---------------------------------------------

def test_download_sink_fetches_2000_files_with_at_most_8_at_once(write, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """2,000 URLs from a CSV `url` column with per_host 8: every file exists with the server's
    size and SHA-256 (checked against X-Checksum-Sha256 as it streams), each was fetched
    once, the server never saw more than 8 downloads at once, and no temp file is left."""
    count = 2000
    # A little latency per file, so that downloads overlap and the bound is exercised.
    write("in.csv", "id,url\n" + "".join(
        f"{n},{api.url}/files/{n}.bin?fault_latency=5ms\n" for n in range(1, count + 1)))
    path = download_pipeline(write, "{use: csv, path: in.csv}", extra="per_host: 8")
    summary = run(path).summary
    assert summary["records_in"] == summary["records_out"] == count
    assert summary["records_dead"] == 0
    check_files(path.parent / "files", {f"{n}.bin": n for n in range(1, count + 1)})
    stats = api.stats()
    assert file_requests(api) == count == stats["requests"]
    assert all(n == 1 for n in stats["by_path"].values())
    assert stats["by_status"] == {"200": count}
    assert 1 < stats["max_in_flight_by_path"]["/files"] <= 8


# -- 5. the download step ----------------------------------------------------------------------

def download_step_pipeline(write, extra: str = "", name: str = "{id}.bin") -> Path:  # type: ignore[no-untyped-def]
    return write("p.yaml", f"""
        version: 1
        name: fetch-step
        source: {{use: jsonl, path: in.jsonl}}
        steps:
          - use: download
            dir: root/files
            name: "{name}"
            allow_hosts: [127.0.0.1]
            retry: {{attempts: 3, base: 1ms, cap: 2ms}}
            {extra}
        sink: {{use: jsonl, path: out/out.jsonl}}
        dead_letter: {{path: out/dead.jsonl}}
        runtime: {{max_failures: 100}}
        """)


def test_download_step_describes_each_file_and_skips_complete_ones(write, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """Each output record carries {path, bytes, sha256, skipped}; a second run over the same
    input with overwrite false fetches nothing (the server sees no file request) and marks
    every record skipped, leaving the files as they were."""
    numbers = list(range(1000, 1040))
    write("in.jsonl", "".join(json.dumps({"id": n, "url": f"{api.url}/files/{n}.bin"}) + "\n"
                              for n in numbers))
    path = download_step_pipeline(write, "checksum_header: X-Checksum-Sha256")
    summary = run(path).summary
    assert summary["records_in"] == summary["records_out"] == len(numbers)
    rows = read_jsonl(path.parent / "out" / "out.jsonl")
    assert [r["id"] for r in rows] == numbers
    for row in rows:
        n = row["id"]
        assert row["download"] == {"path": f"{n}.bin", "bytes": n, "skipped": False,
                                   "sha256": expected_file(f"{n}.bin", n)}
    folder = path.parent / "root" / "files"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.bin" for n in numbers)
    assert file_requests(api) == len(numbers)
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    api.reset()
    summary = run(path).summary  # a new run, not a resume: same input, same directory
    assert summary["records_in"] == summary["records_out"] == len(numbers)
    assert file_requests(api) == 0
    rows = read_jsonl(path.parent / "out" / "out.jsonl")
    assert [r["download"] for r in rows] == [
        {"path": f"{n}.bin", "bytes": n, "sha256": None, "skipped": True} for n in numbers]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written


def test_download_step_fetches_a_url_listed_many_times_once(write, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """The same URL in 12 records of one batch (one file name): one record downloads it while
    the others wait, then find it complete and are marked skipped; one request, no dead
    letter."""
    write("in.jsonl", "".join(json.dumps({"id": i, "url": f"{api.url}/files/777.bin"}) + "\n"
                              for i in range(12)))
    path = download_step_pipeline(write, name="copy.bin")
    summary = run(path).summary
    assert (summary["records_out"], summary["records_dead"]) == (12, 0)
    rows = read_jsonl(path.parent / "out" / "out.jsonl")
    assert sorted(r["download"]["skipped"] for r in rows) == [False] + [True] * 11
    assert {(r["download"]["path"], r["download"]["bytes"]) for r in rows} == {("copy.bin", 777)}
    assert api.stats()["by_path"] == {"/files/777.bin": 1}
    assert [p.name for p in (path.parent / "root" / "files").iterdir()] == ["copy.bin"]


HOSTILE = ["../../x", "/etc/passwd", "%2e%2e%2f", "a\x00b", "n" * 4096, "CON", "..", ".", "",
           "sub/../../y", "..\\..\\z", "ok.bin"]
UNUSABLE = {"..", ".", ""}


def tree(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def test_download_step_keeps_hostile_names_inside_dir(write, tmp_path: Path, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """Names from data (`name: "{name}"`) such as ../../x, /etc/passwd, %2e%2e%2f, a NUL, 4096
    characters or CON: each file lands inside `dir` under a single safe name, or the record
    is a dead letter (., .., empty); nothing is written anywhere else."""
    write("in.jsonl", "".join(
        json.dumps({"id": i, "name": name, "url": f"{api.url}/files/{i + 1}.bin"}) + "\n"
        for i, name in enumerate(HOSTILE)))
    path = download_step_pipeline(write, name="{name}")
    passwd = Path("/etc/passwd").stat()
    before = tree(tmp_path)
    summary = run(path).summary
    assert summary["records_in"] == len(HOSTILE)
    assert summary["records_dead"] == len(UNUSABLE)
    assert summary["records_out"] == len(HOSTILE) - len(UNUSABLE)

    dead = read_jsonl(path.parent / "out" / "dead.jsonl")
    assert sorted(d["record"]["name"] for d in dead) == sorted(UNUSABLE)
    assert {d["error"] for d in dead} == {"UnsafeName"}
    root = (path.parent / "root" / "files").resolve()
    rows = read_jsonl(path.parent / "out" / "out.jsonl")
    for row in rows:
        done = row["download"]
        target = (root / done["path"]).resolve()
        assert target.parent == root, done["path"]  # one segment, inside dir
        assert "\0" not in done["path"] and len(done["path"].encode()) <= 255
        assert done["path"].upper() != "CON" and not done["skipped"]
        size = row["id"] + 1
        assert target.stat().st_size == done["bytes"] == size
        assert done["sha256"] == expected_file(f"{size}.bin", size)
    assert len({row["download"]["path"] for row in rows}) == len(rows)
    assert sorted(p.name for p in root.iterdir()) == sorted(r["download"]["path"] for r in rows)
    assert {p.parts[0] for p in tree(tmp_path) - before} <= {"root", "out", ".headrace"}
    assert Path("/etc/passwd").stat().st_mtime_ns == passwd.st_mtime_ns
    assert file_requests(api) == len(HOSTILE) - len(UNUSABLE)  # unusable names: no request


def test_download_step_checksum_mismatch_is_a_dead_letter(write, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """A record whose `checksum_field` does not match the bytes is tried 3 times (retry
    attempts 3), then dead-lettered; no file is left under its name nor as a temp file. The
    record with the right checksum is downloaded."""
    good = expected_file("300.bin", 300)
    write("in.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"id": 300, "url": f"{api.url}/files/300.bin", "sum": good.upper()},
        {"id": 301, "url": f"{api.url}/files/301.bin", "sum": "0" * 64},
    ]))
    path = download_step_pipeline(write, "checksum_field: sum")
    summary = run(path).summary
    assert (summary["records_out"], summary["records_dead"]) == (1, 1)
    assert summary["steps"][0]["retries"] == 2
    (dead,) = read_jsonl(path.parent / "out" / "dead.jsonl")
    assert dead["record"]["id"] == 301
    assert (dead["error"], dead["attempts"]) == ("ChecksumMismatch", 3)
    folder = path.parent / "root" / "files"
    assert [p.name for p in folder.iterdir()] == ["300.bin"]
    assert api.stats()["by_path"] == {"/files/300.bin": 1, "/files/301.bin": 3}


# -- 6. bounded memory -----------------------------------------------------------------------

PEAK_RSS = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True)
print(json.dumps({"code": proc.returncode, "stderr": proc.stderr.decode(errors="replace"),
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def peak_rss_of_run(path: Path) -> int:
    """Peak RSS (bytes) of one ``headrace run``, the only child of a fresh wrapper process."""
    wrapper = subprocess.run([sys.executable, "-c", PEAK_RSS, *HEADRACE, "run", str(path)],
                             capture_output=True, timeout=120, check=True,
                             env={**os.environ, **LOCAL_ENV})
    report = json.loads(wrapper.stdout)
    assert report["code"] == 0, report["stderr"]
    return int(report["peak_kib"]) * 1024


@pytest.mark.slow
def test_download_of_a_large_file_uses_bounded_memory(write, tmp_path: Path, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """A 200 MB file streams to disk: the run's peak RSS is at most a few MiB above a run that
    downloads 1 KB (the file is never held in memory), and the file is complete."""
    size = 200_000_000
    peaks = {}
    for n in (1000, size):
        folder = tmp_path / f"run-{n}"
        folder.mkdir()
        (folder / "urls.txt").write_text(f"{api.url}/files/{n}.bin\n")
        (folder / "p.yaml").write_text("""version: 1
name: big
source: {use: urls, path: urls.txt}
sink: {use: download, dir: files, allow_hosts: [127.0.0.1],
       checksum_header: X-Checksum-Sha256}
""")
        peaks[n] = peak_rss_of_run(folder / "p.yaml")
        assert (folder / "files" / f"{n}.bin").stat().st_size == n
    growth = peaks[size] - peaks[1000]
    assert growth < 64 * 1024**2, f"peak RSS {peaks}: +{growth / 2**20:.0f} MiB"
    assert api.stats()["by_path"] == {"/files/1000.bin": 1, f"/files/{size}.bin": 1}
    digest = hashlib.sha256()
    with (tmp_path / f"run-{size}" / "files" / f"{size}.bin").open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == announced_checksum(api, f"{size}.bin")


def announced_checksum(api: DemoApi, name: str) -> str:
    """The SHA-256 the server announces for a file (X-Checksum-Sha256 of a HEAD request)."""
    request = urllib.request.Request(f"{api.url}/files/{name}", method="HEAD")
    with _NO_PROXY.open(request, timeout=60) as response:
        return str(response.headers["X-Checksum-Sha256"])


# -- 7. the http sink --------------------------------------------------------------------------

def write_records(write, count: int) -> None:  # type: ignore[no-untyped-def]
    write("in.jsonl", "".join(json.dumps({"id": i, "value": i * 1.5}) + "\n"
                              for i in range(1, count + 1)))


def sink_pipeline(write, url: str, options: str = "", name: str = "deliver",  # type: ignore[no-untyped-def]
                  steps: str = "[]") -> Path:
    return write("p.yaml", f"""
        version: 1
        name: {name}
        source: {{use: jsonl, path: in.jsonl}}
        steps: {steps}
        sink: {{use: http, url: "{url}", {options}}}
        dead_letter: {{path: out/dead.jsonl}}
        runtime: {{max_failures: 100}}
        """)


@pytest.mark.parametrize("batch_size", [1, 20])
def test_http_sink_delivers_exactly_once_despite_lost_acks(  # type: ignore[no-untyped-def]
        write, own_api: Callable[..., DemoApi], batch_size: int) -> None:
    """500 records to /ingest with 20% of answers lost after the records were stored and 10%
    5xx: retried with the same Idempotency-Key, the receiver stores every id exactly once;
    each lost answer shows up as one duplicate; every request is a first delivery, a
    duplicate or a 5xx."""
    # A fresh seeded server: the requests are alike, so the sequence of faults is the same
    # in every run whatever their order (with batch_size 20, only ~25 groups are sent).
    api = own_api("--seed", "2024")
    count = 500
    write_records(write, count)
    path = sink_pipeline(
        write, f"{api.url}/ingest?fault_ack_loss=0.2&fault_error=0.1",
        f"batch_size: {batch_size}, retry: {{attempts: 20, base: 1ms, cap: 5ms}}")
    summary = run(path).summary
    assert summary["status"] == "ok"
    assert summary["records_out"] == count and summary["records_dead"] == 0
    stored = api.ingest()
    assert Counter(stored["ids"]) == Counter(range(1, count + 1))
    assert stored["keys"] == -(-count // batch_size) and stored["unkeyed"] == 0
    stats = api.stats()
    assert stored["duplicates"] > 0
    assert stored["duplicates"] == stats["faults"]["ack_loss"]
    assert stats["by_path"]["/ingest"] == (stored["keys"] + stored["duplicates"]
                                           + stats["faults"]["error"])
    keys = Counter(e["idempotency_key"] for e in api.requests("/ingest"))
    assert len(keys) == stored["keys"] and None not in keys


SHAPE = """
def shape(record):
    # A number instead of an object for every tenth record: /ingest answers 400.
    i = record["id"]
    record["body"] = i if i % 10 == 0 else {"id": i, "value": record["value"]}
    return record
"""


def test_http_sink_4xx_records_are_dead_letters(write, api: DemoApi) -> None:  # type: ignore[no-untyped-def]
    """Records whose body the endpoint refuses (400: not a JSON object) are dead letters,
    sent once each (a 4xx is not retried); every other record is delivered once."""
    count = 100
    write_records(write, count)
    write("shape.py", SHAPE)
    path = sink_pipeline(write, f"{api.url}/ingest", 'json: "{body}", retry: 5',
                         steps='[{use: python, function: "shape:shape"}]')
    summary = run(path).summary
    refused = list(range(10, count + 1, 10))
    assert (summary["records_out"], summary["records_dead"]) == (count - 10, 10)
    dead = read_jsonl(path.parent / "out" / "dead.jsonl")
    assert [d["record"]["id"] for d in dead] == refused
    assert {(d["step"], d["error"]) for d in dead} == {("http", "HttpStatusError")}
    assert all("HTTP 400" in d["message"] for d in dead)
    assert sorted(api.ingest()["ids"]) == [i for i in range(1, count + 1) if i % 10]
    assert api.stats()["by_path"] == {"/ingest": count}
    assert api.stats()["by_status"] == {"201": count - 10, "400": 10}


def test_http_sink_outage_fails_the_run_and_resume_delivers_exactly_once(  # type: ignore[no-untyped-def]
        write, own_api: Callable[..., DemoApi]) -> None:
    """Endpoint down (nothing listening): the run exits 1 with a one-line error that says to
    --resume, and dead-letters nothing. Then the endpoint answers 5xx to everything: the
    resumed run fails again, having sent no more than max_in_flight x attempts requests.
    Once healthy, --resume delivers every record exactly once."""
    count = 200
    write_records(write, count)
    port = free_port()
    path = sink_pipeline(write, f"http://127.0.0.1:{port}/ingest",
                         f"max_in_flight: 4, retry: {FAST_RETRY}")
    failed = run(path, expect=1)
    summary = failed.summary
    assert summary["status"] == "failed" and summary["records_dead"] == 0
    assert summary["records_out"] == 0 and summary["checkpoint"]["resumable"] is True
    assert "\n" not in summary["error"] and "--resume" in summary["error"]
    assert "gave up after 2 attempts" in summary["error"]
    assert not (path.parent / "out" / "dead.jsonl").exists()

    api = own_api("--error-rate", "1", port=port)
    failed = run(path, "--resume", expect=1)
    assert failed.summary["records_dead"] == 0 and "--resume" in failed.summary["error"]
    assert 2 <= api.stats()["requests"] <= 4 * 2
    assert api.ingest()["ids"] == []

    api.restart()  # healthy, on the same port
    summary = run(path, "--resume").summary
    assert summary["status"] == "ok"
    assert summary["records_out"] == count and summary["records_dead"] == 0
    assert Counter(api.ingest()["ids"]) == Counter(range(1, count + 1))
    assert api.ingest()["duplicates"] == 0
    dead = path.parent / "out" / "dead.jsonl"
    assert not dead.exists() or dead.read_text() == ""


def test_http_sink_keys_are_the_same_for_the_same_input_and_new_for_new_input(  # type: ignore[no-untyped-def]
        write, own_api: Callable[..., DemoApi]) -> None:
    """Running again over the same file sends the same keys (the receiver stores nothing
    twice); a changed file with the same line numbers gets new keys (nothing is lost)."""
    api = own_api("--seed", "7")
    write_records(write, 20)
    path = sink_pipeline(write, f"{api.url}/ingest")
    run(path)
    run(path)
    first = api.ingest()
    assert sorted(first["ids"]) == list(range(1, 21)) and first["duplicates"] == 20
    write("in.jsonl", "".join(json.dumps({"id": 100 + i, "value": 0.5}) + "\n"
                              for i in range(1, 21)))  # other records, same line numbers
    run(path)
    second = api.ingest()
    assert sorted(second["ids"]) == [*range(1, 21), *range(101, 121)]
    assert second["keys"] == 40
