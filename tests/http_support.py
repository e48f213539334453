"""Helpers of the ``http`` step's tests: the demo API (and other aiohttp apps) served
in-process on 127.0.0.1 by a thread, and running a one-step pipeline with its ledger checked."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from headrace.cli._demo_api import STATE, DemoApiOptions, DemoApiServer

from .conftest import CliResult, assert_accounted, read_jsonl, run_cli

# Seed of the server's fault dice. With 7 its first draws are 0.32, 0.15, 0.65: a single
# record with ``fault_reset=0.5`` (and no other faulty request in the run) is reset twice, then
# answered (``test_a_reset_connection_is_retried_and_the_record_kept`` relies on it).
SEED = 7
# Client-side timer slack allowed when checking Retry-After from the server's timestamps: the
# client sleeps on its event loop (uvloop/libuv: millisecond timers measured from a loop time
# cached at the start of the iteration that received the 429), and for HTTP-dates the
# wall-clock <-> monotonic mapping is measured in this process (sub-millisecond, plus NTP
# slew of at most ~0.5 ms/s over the test). A client that ignored Retry-After would retry
# after its 10 ms backoff, a whole second too early, so this slack hides no real violation.
SLACK = 0.010
RETRY_5 = {"attempts": 5, "base": "10ms", "cap": "20ms"}
RETRY_3 = {"attempts": 3, "base": "10ms", "cap": "20ms"}


# -- the servers -------------------------------------------------------------------------------
class Served:
    """A server (an async context manager with a ``port``) run for one test by a thread with
    its own event loop; the test's ``headrace`` subprocesses connect to it on 127.0.0.1."""

    def __init__(self, open_server: Callable[[], Any]) -> None:
        self._open_server = open_server
        self.server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="test-server", daemon=True)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._open_server() as server:
            self.server = server
            self._ready.set()
            await self._stop.wait()

    def start(self) -> Served:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None or self.server is None:
            raise RuntimeError(f"test server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "test server thread did not stop"

    @property
    def port(self) -> int:
        return int(self.server.port)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Api(Served):
    """The demo API (``headrace demo-api``'s server), seeded, with its observers."""

    def __init__(self, seed: int = SEED) -> None:
        super().__init__(lambda: DemoApiServer(DemoApiOptions(seed=seed), port=0))

    def start(self) -> Api:
        super().start()
        return self

    def call(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method=(
            "GET" if data is None else "POST"), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return dict(self.call("/stats"))

    def log(self, path: str | None = None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.call("/stats/requests")["requests"]
        return [e for e in entries if path is None or e["path"] == path]

    def reset(self) -> None:
        self.call("/stats/reset", {})

    def wall(self, t: float) -> float:
        """The wall-clock time of the request log's time ``t`` (both clocks of this host)."""
        return float(time.time() - self.server.app[STATE].log.now() + t)

    def server_t(self, wall: float) -> float:
        """The request log's time of wall-clock time ``wall``."""
        return wall - self.wall(0.0)


class AppServer:
    """A plain aiohttp application on 127.0.0.1, any free port (for answers the demo API does
    not give)."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def __aenter__(self) -> AppServer:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


# -- running a pipeline ------------------------------------------------------------------------
@dataclass
class Run:
    result: CliResult
    summary: dict[str, Any]
    out: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    root: Path

    @property
    def step(self) -> dict[str, Any]:
        return dict(self.summary["steps"][0])

    def out_by_id(self) -> dict[Any, dict[str, Any]]:
        return {r["id"]: r for r in self.out}

    def dead_by_id(self) -> dict[Any, dict[str, Any]]:
        return {d["record"]["id"]: d for d in self.dead}


def run_step(write: Any, step: dict[str, Any], records: list[dict[str, Any]], *,
             name: str = "http-step", args: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> Run:
    """Run jsonl -> one ``http`` step -> jsonl with ``records``; check the ledger and return
    what came out. Dead letters never fail the run (max_failures: 100%)."""
    write(f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    path = write(f"{name}.yaml", f"""
        version: 1
        name: {name}
        source: {{use: jsonl, path: {name}.jsonl}}
        steps:
          - {json.dumps({"use": "http", **step})}
        sink: {{use: jsonl, path: {name}-out/o.jsonl}}
        runtime: {{max_failures: "100%"}}
        """)
    result = run_cli(*args, "run", str(path), "--json", env=env, timeout=90)
    assert result.code == 0, result.stderr
    summary = result.summary
    assert summary["status"] == "ok", summary
    assert_accounted(summary)
    assert summary["records_in"] == len(records)
    assert summary["records_filtered"] == 0
    output = path.parent / f"{name}-out" / "o.jsonl"
    out = read_jsonl(output) if output.exists() else []
    dead_path = summary.get("dead_letter")
    dead = read_jsonl(Path(dead_path)) if dead_path and Path(dead_path).exists() else []
    assert len(out) == summary["records_out"], (len(out), summary)
    assert len(dead) == summary["records_dead"], (len(dead), summary)
    step_summary = summary["steps"][0]
    assert (step_summary["in"], step_summary["out"], step_summary["dead"]) == (
        len(records), len(out), len(dead))
    # every input record ends exactly once in out or dead
    ids = sorted([r["id"] for r in out] + [d["record"]["id"] for d in dead])
    assert ids == sorted(r["id"] for r in records)
    return Run(result, summary, out, dead, path.parent)


def query_of(entry: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(entry["query"], keep_blank_values=True).items()}


def by_param(entries: list[dict[str, Any]], param: str) -> dict[str, list[dict[str, Any]]]:
    """Log entries grouped by one query parameter, each group in arrival order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(entries, key=lambda e: e["t"]):
        groups[query_of(entry).get(param, "")].append(entry)
    return dict(groups)


def zips(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct five-digit zips (leading zeros included), reproducibly."""
    return [f"{z:05d}" for z in random.Random(seed).sample(range(100_000), n)]


# -- 9. DNS failure, connection refused ---------------------------------------------------------
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


