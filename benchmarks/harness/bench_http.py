"""Benchmark 5: HTTP enrichment against the local fault-injecting server (``headrace demo-api``).

- 5a, no server latency, C = 64 and 256 in flight: headrace's ``http`` step against a bare
  aiohttp loop (on asyncio and on uvloop) and a Scrapy spider, same server, same URLs.
- 5b, 20 ms fixed server latency, C = 16, 32, 64: headrace and the bare loop against
  Little's law, C / 0.020 s, capped by the bare loop's own ceiling measured in 5a.
- 5c, 10% injected 5xx (500/502/503, all retried by the step): headrace's records/s and
  requests per record, against the same pipeline without faults.

Each section starts its own server (``--seed 1``) and stops it at the end. Throughput is
measured from the server's side for every contender (``demo_server``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .contenders import headrace_executable
from .demo_server import POLL_INTERVAL, DemoServer, Trial
from .http_contenders import (
    SCRAPY_MISSING,
    UVLOOP_MISSING,
    Job,
    bare_argv,
    clear_outputs,
    client_report,
    first_error,
    headrace_argv,
    headrace_unavailable,
    output_lines,
    run_summary,
    scrapy_argv,
    scrapy_installed,
    uvloop_installed,
    write_pipeline,
)
from .report import Table, goal, ratio

GOAL = 0.9  # headrace / bare loop (5a), headrace / capped Little bound (5b), at least
LATENCY = 0.020  # seconds, 5b
FREE_C = (64, 256)  # 5a
LATENCY_C = (16, 32, 64)  # 5b
FAULT_C = 64  # 5c
FAULT_RATE = "0.1"  # fault_error per request, 5c
SERVER_ARGS = ["--seed", "1"]
RUN_TIMEOUT = 300.0  # seconds; a run taking longer is killed and reported as failed


@dataclass(frozen=True)
class Sizes:
    requests: int  # requests per run in 5a
    scrapy: int  # requests per Scrapy run in 5a (Scrapy is ~10x slower here)
    latency_s: float  # 5b: requests per run = C / LATENCY * latency_s
    faults: int  # records per run in 5c


FULL = Sizes(requests=16_000, scrapy=1_200, latency_s=3.0, faults=12_000)
QUICK = Sizes(requests=5_000, scrapy=400, latency_s=1.5, faults=4_000)


def default_loop() -> str:
    """The loop headrace runs on by default (``runtime.loop: auto``)."""
    return "uvloop" if uvloop_installed() else "asyncio"


@dataclass
class Run:
    trial: Trial
    job: Job
    check: str  # "ok" or what was wrong
    summary: dict[str, Any] | None = None  # headrace's summary.json

    @property
    def good(self) -> bool:
        return self.check == "ok" and self.trial.rate is not None


@dataclass
class Racer:
    """One contender: how to run a job, and why it cannot run (None: it can)."""

    name: str
    start: Callable[[DemoServer, Job, str], Run]
    missing: str | None = None
    size: Callable[[Job], Job] = field(default=lambda job: job)


def _bare(loop: str) -> Racer:
    def start(server: DemoServer, job: Job, label: str) -> Run:
        trial = server.measure(bare_argv(job, loop), timeout=RUN_TIMEOUT)
        return Run(trial, job, _client_check(trial, job))

    return Racer(f"bare aiohttp ({loop})", start,
                 missing=UVLOOP_MISSING if loop == "uvloop" and not uvloop_installed() else None)


def _scrapy(requests: int) -> Racer:
    def start(server: DemoServer, job: Job, label: str) -> Run:
        trial = server.measure(scrapy_argv(job), timeout=RUN_TIMEOUT)
        return Run(trial, job, _client_check(trial, job))

    return Racer("scrapy", start, missing=None if scrapy_installed() else SCRAPY_MISSING,
                 size=lambda job: replace(job, records=requests))


def _headrace(work: Path, missing: str | None, name: str = "headrace") -> Racer:
    def start(server: DemoServer, job: Job, label: str) -> Run:
        pipeline = write_pipeline(work, label, job)
        clear_outputs(pipeline)
        trial = server.measure(headrace_argv(pipeline), cwd=pipeline.parent,
                               timeout=RUN_TIMEOUT)
        summary = run_summary(pipeline)
        check = _headrace_check(trial, job, summary, output_lines(pipeline))
        return Run(trial, job, check, summary)

    return Racer(name, start, missing=missing)


def _client_check(trial: Trial, job: Job) -> str:
    if not trial.ok:
        return f"exit {trial.returncode}: {first_error(trial.stderr)}"
    report = client_report(trial.stdout)
    if report is None or report.get("ok") != job.records:
        return f"client answered {report.get('ok') if report else '?'} of {job.records:,}"
    if trial.status_count(200) != job.records:
        return f"server sent {trial.status_count(200):,} 200s for {job.records:,} requests"
    return "ok"


def _headrace_check(trial: Trial, job: Job, summary: dict[str, Any] | None,
                    lines: int | None) -> str:
    """Exit 0, status ok, every record out (or dead, where faults were injected), and
    the output file holds records_out lines."""
    if not trial.ok:
        return f"exit {trial.returncode}: {first_error(trial.stderr)}"
    if summary is None:
        return "no summary.json"
    out, dead = int(summary.get("records_out", 0)), int(summary.get("records_dead", 0))
    if job.max_failures is None and dead:
        return f"{dead:,} records dead-lettered without injected faults"
    if summary.get("status") != "ok" or out + dead != job.records:
        return (f"status {summary.get('status')}, {out + dead:,} of {job.records:,} records "
                "out or dead")
    if lines != out:
        return f"output has {lines} lines for {out:,} records out"
    return "ok"


def _headrace_missing(work: Path, job: Job) -> str | None:
    why = headrace_unavailable(write_pipeline(work, "validate", job))
    return None if why is None else f"headrace http step: not available ({why})"


def _race(server: DemoServer, racers: Sequence[Racer], jobs: Sequence[tuple[str, Job]],
          repeats: int, section: str) -> dict[tuple[str, str], list[Run]]:
    """Every (racer, job) ``repeats`` times, interleaved so drift hits all alike."""
    runs: dict[tuple[str, str], list[Run]] = {}
    for rep in range(repeats):
        for label, job in jobs:
            for racer in racers:
                if racer.missing is not None:
                    continue
                run = racer.start(server, racer.size(job), f"{section}-{label}")
                runs.setdefault((racer.name, label), []).append(run)
                _progress(rep, repeats, racer.name, label, run)
    return runs


def _progress(rep: int, repeats: int, name: str, label: str, run: Run) -> None:
    rate = run.trial.rate
    shown = f"{rate:9,.0f} req/s" if rate is not None else "   too short"
    status = run.check if run.check == "ok" else f"FAILED: {run.check}"
    print(f"  [{rep + 1}/{repeats}] {name:<22} {label:<6} {shown}  {run.trial.wall_s:6.2f} s "
          f"{run.trial.requests:>7,} requests  {status}", flush=True)


def _good(runs: Sequence[Run]) -> list[Run]:
    return [r for r in runs if r.good]


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _rate(runs: Sequence[Run]) -> float | None:
    return _median([r.trial.rate for r in _good(runs)])


def _percent(value: float | None) -> str:
    return f"{value * 100:.0f}%" if value is not None else "-"


def _status(runs: Sequence[Run]) -> str:
    bad = [r for r in runs if not r.good]
    if not bad:
        return "ok"
    first = bad[0].check if bad[0].check != "ok" else "run too short to measure"
    return f"{len(bad)} of {len(runs)} FAILED: {first}"


def _methods(runs: dict[tuple[str, str], list[Run]]) -> str:
    seen = sorted({r.trial.method for every in runs.values() for r in every})
    names = {"log": "the server's request log (GET /stats/requests)",
             "poll": f"GET /stats polled every {POLL_INTERVAL:g} s",
             "none": "not measurable (run too short)"}
    return "; ".join(names[m] for m in seen) or "-"


def _headrace_loop(runs: dict[tuple[str, str], list[Run]]) -> str:
    for (name, _), every in runs.items():
        for run in every:
            if name == "headrace" and run.summary and run.summary.get("loop"):
                return str(run.summary["loop"])
    return default_loop()


# --- 5a: no latency ------------------------------------------------------------------------


def _free(work: Path, repeats: int, sizes: Sizes) -> tuple[list[Table], dict[str, float]]:
    """Section 5a; also returns the bare loop's ceiling per event loop (best C)."""
    print(f"\nbenchmark 5a: no server latency, C = {', '.join(map(str, FREE_C))}, "
          f"{sizes.requests:,} requests per run, {repeats} repeat(s)", flush=True)
    jobs = [(f"C={c}", c) for c in FREE_C]
    with DemoServer(headrace_executable(), SERVER_ARGS, work) as server:
        job_list = [(label, Job(server.url, sizes.requests, c)) for label, c in jobs]
        racers = [_bare("asyncio"), _bare("uvloop"),
                  _headrace(work, _headrace_missing(work, job_list[0][1])),
                  _scrapy(sizes.scrapy)]
        runs = _race(server, racers, job_list, repeats, "5a")
    table = Table(f"Benchmark 5a: HTTP enrichment, no server latency ({sizes.requests:,} "
                  f"requests per run, Scrapy {sizes.scrapy:,}; median of {repeats})",
                  ["contender", "C", "req/s", "min-max req/s", "client CPU", "client ms/req",
                   "server CPU", "check"])
    for racer in racers:
        if racer.missing is not None:
            table.add(racer.missing, *([""] * (len(table.headers) - 1)))
            continue
        for label, _ in jobs:
            every = runs.get((racer.name, label), [])
            good = _good(every)
            rates = [r.trial.rate for r in good if r.trial.rate is not None]
            table.add(racer.name, label.removeprefix("C="),
                      f"{_rate(every):,.0f}" if rates else "n/a",
                      f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "-",
                      _percent(_median([r.trial.client_cpu for r in good])),
                      _ms(_median([r.trial.client_cpu_per_request for r in good])),
                      _percent(_median([r.trial.server_cpu for r in good])), _status(every))
    loop = _headrace_loop(runs)
    table.notes += [
        f"req/s: measured from the server's side: {_methods(runs)}; client start-up is "
        "not counted",
        "client CPU, server CPU: share of one core in that window (psutil); client ms/req: "
        "the client's CPU time per request in it",
        f"headrace ran on {loop} (runtime.loop: auto); the bare loop is one ClientSession, "
        "TCPConnector(limit=C), C tasks pulling URLs from one list",
        "scrapy: CrawlerProcess, asyncio reactor, CONCURRENT_REQUESTS(_PER_DOMAIN)=C, no "
        "robots/AutoThrottle/retries/cookies, CONCURRENT_ITEMS=1 (contenders/scrapy_spider.py)",
    ]
    ceilings: dict[str, float] = {}
    for name in ("asyncio", "uvloop"):
        best = [_rate(runs.get((f"bare aiohttp ({name})", label), [])) for label, _ in jobs]
        known = [b for b in best if b is not None]
        if known:
            ceilings[name] = max(known)
    return [table, _free_ratios(runs, [label for label, _ in jobs], loop, racers)], ceilings


def _number(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.3f}" if seconds is not None else "-"


def _free_ratios(runs: dict[tuple[str, str], list[Run]], labels: list[str], loop: str,
                 racers: Sequence[Racer]) -> Table:
    other = "asyncio" if loop == "uvloop" else "uvloop"
    missing = {r.name: r.missing for r in racers if r.missing is not None}
    table = Table("Benchmark 5a: throughput ratios, no server latency",
                  ["ratio (req/s)", "C", "value", "goal", "status"])
    pairs = [("headrace", f"bare aiohttp ({loop})", True),
             ("headrace", f"bare aiohttp ({other})", False),
             ("bare aiohttp (uvloop)", "bare aiohttp (asyncio)", False),
             ("headrace", "scrapy", False)]
    for mine, theirs, has_goal in pairs:
        for label in labels:
            name = f"{mine} / {theirs}"
            why = missing.get(mine) or missing.get(theirs)
            a, b = _rate(runs.get((mine, label), [])), _rate(runs.get((theirs, label), []))
            if why is not None or a is None or b is None:
                short = why.split(" (")[0] if why is not None else "a run failed"
                table.add(name, label.removeprefix("C="), "n/a", "", short)
                continue
            value = a / b
            table.add(name, label.removeprefix("C="), ratio(value),
                      f">= {GOAL:.1f}x" if has_goal else "-",
                      goal(value, GOAL) if has_goal else "-")
    table.notes.append(f"the goal is headrace over the bare loop on the same event loop "
                       f"({loop}); bare uvloop / bare asyncio says whether uvloop moves the "
                       "bare client's ceiling")
    return table


# --- 5b: 20 ms latency ---------------------------------------------------------------------


def _latency(work: Path, repeats: int, sizes: Sizes, ceilings: dict[str, float]) -> list[Table]:
    loop = default_loop()
    print(f"\nbenchmark 5b: {LATENCY * 1000:.0f} ms fixed server latency, C = "
          f"{', '.join(map(str, LATENCY_C))}, ~{sizes.latency_s:g} s per run, "
          f"{repeats} repeat(s)", flush=True)
    args = [*SERVER_ARGS, "--latency", f"{LATENCY * 1000:g}ms", "--latency-dist", "fixed"]
    with DemoServer(headrace_executable(), args, work) as server:
        jobs = [(f"C={c}", Job(server.url, round(c / LATENCY * sizes.latency_s), c))
                for c in LATENCY_C]
        racers = [_headrace(work, _headrace_missing(work, jobs[0][1])), _bare(loop)]
        runs = _race(server, racers, jobs, repeats, "5b")
    ceiling = ceilings.get(_headrace_loop(runs)) or ceilings.get(loop)
    table = Table(f"Benchmark 5b: {LATENCY * 1000:.0f} ms fixed server latency, "
                  f"~{sizes.latency_s:g} s per run (median of {repeats})",
                  ["C", "requests", "bound C/latency", "cap", "server ms", "headrace req/s",
                   "in flight", "headrace / cap", "status", f"bare ({loop}) req/s",
                   "in flight", "bare / cap"])
    headrace, bare = racers[0], racers[1]
    for label, job in jobs:
        c = job.concurrency
        bound = c / LATENCY
        cap = min(bound, ceiling) if ceiling else bound
        mine_runs = _good(runs.get((headrace.name, label), []))
        bare_runs = _good(runs.get((bare.name, label), []))
        mine, theirs = _rate(mine_runs), _rate(bare_runs)
        if mine is not None:
            status = goal(mine / cap, GOAL)
        elif headrace.missing is not None:
            status = "not available"
        else:
            status = _status(runs.get((headrace.name, label), []))
        server_s = _median([r.trial.server_seconds for r in mine_runs + bare_runs])
        table.add(str(c), f"{job.records:,}", f"{bound:,.0f}", f"{cap:,.0f}",
                  f"{server_s * 1000:.1f}" if server_s is not None else "-",
                  f"{mine:,.0f}" if mine else "n/a",
                  _number(_median([r.trial.in_flight for r in mine_runs])),
                  ratio(mine / cap) if mine else "n/a", status,
                  f"{theirs:,.0f}" if theirs else "n/a",
                  _number(_median([r.trial.in_flight for r in bare_runs])),
                  ratio(theirs / cap) if theirs else "n/a")
    if headrace.missing is not None:
        table.notes.append(headrace.missing)
    for racer in racers:
        for label, _ in jobs:
            every = runs.get((racer.name, label), [])
            if every and any(not r.good for r in every):
                table.notes.append(f"{racer.name} {label}: {_status(every)}")
    table.notes += [
        f"bound: Little's law, C / {LATENCY:g} s; cap: the bound, capped by the bare "
        f"aiohttp client's own ceiling on {_headrace_loop(runs)} measured without latency in "
        "5a (its best C): " + (f"{ceiling:,.0f} req/s" if ceiling else "not measured"),
        f"goal: headrace >= {GOAL:.1f}x the cap; the bare loop's ratio shows how close the "
        "cap itself can be reached",
        "server ms: median time from a request's arrival to its answer; in flight: requests "
        "at the server on average (time spent on requests over the run's span), both from "
        "the server's request log; C / (server ms) is what a client with C in flight at "
        "every moment would reach",
    ]
    return [table]


# --- 5c: injected 5xx ----------------------------------------------------------------------


def _faults(work: Path, repeats: int, sizes: Sizes) -> list[Table]:
    print(f"\nbenchmark 5c: fault_error={FAULT_RATE} (500/502/503), C = {FAULT_C}, "
          f"{sizes.faults:,} records per run, {repeats} repeat(s)", flush=True)
    with DemoServer(headrace_executable(), SERVER_ARGS, work) as server:
        # Both pipelines carry a fault_error parameter, so the server parses one in both.
        jobs = [(label, Job(server.url, sizes.faults, FAULT_C, {"fault_error": rate}, "1%"))
                for label, rate in (("clean", "0"), ("faults", FAULT_RATE))]
        racer = _headrace(work, _headrace_missing(work, jobs[0][1]))
        runs = _race(server, [racer], jobs, repeats, "5c")
    table = Table(f"Benchmark 5c: headrace with {float(FAULT_RATE):.0%} injected 5xx "
                  f"(500/502/503), C = {FAULT_C}, {sizes.faults:,} records (median of "
                  f"{repeats})",
                  ["variant", "records/s", "min-max", "requests/record", "retries", "dead",
                   "engine records/s", "5xx answered", "check"])
    if racer.missing is not None:
        table.add(racer.missing, *([""] * (len(table.headers) - 1)))
        return [table]
    per_second: dict[str, float] = {}
    for label, job in jobs:
        every = runs.get((racer.name, label), [])
        good = _good(every)
        if not good:
            table.add(label, "n/a", "", "", "", "", "", "", _status(every))
            continue
        rates = [_records_per_s(r) for r in good]
        per_second[label] = statistics.median(rates)
        last = good[-1]
        steps = (last.summary or {}).get("steps") or [{}]
        errors = sum(last.trial.status_count(s) for s in (500, 502, 503, 504))
        table.add(f"{label} (fault_error={job.params['fault_error'] if job.params else '-'})",
                  f"{per_second[label]:,.0f}", f"{min(rates):,.0f}-{max(rates):,.0f}",
                  f"{statistics.median(r.trial.requests / job.records for r in good):.3f}",
                  str(steps[0].get("retries", "-")),
                  str((last.summary or {}).get("records_dead", "-")),
                  _engine_rate(last.summary), f"{errors:,}", _status(every))
    if len(per_second) == 2:
        value = per_second["faults"] / per_second["clean"]
        table.notes.append(f"records/s with faults / without: {ratio(value)}")
    p = float(FAULT_RATE)
    table.notes += [
        "records/s: the server's request rate (as in 5a) over requests per record; "
        "engine records/s: records_out / duration_s of summary.json (start-up excluded); "
        "retries, dead and 5xx answered: last run",
        f"with 3 attempts (the default retry) a record needs 1 + p + p^2 = "
        f"{1 + p + p * p:.3f} requests on average and is dead-lettered with p^3 = "
        f"{p ** 3:.3%}: the pipelines allow runtime.max_failures: 1%",
    ]
    return [table]


def _records_per_s(run: Run) -> float:
    assert run.trial.rate is not None
    return run.trial.rate * run.job.records / max(1, run.trial.requests)


def _engine_rate(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("duration_s"):
        return "-"
    return f"{int(summary.get('records_out', 0)) / float(summary['duration_s']):,.0f}"


def run(work: Path, repeats: int, quick: bool = False,
        show: Callable[[list[Table]], list[Table]] = lambda tables: tables) -> list[Table]:
    """Sections 5a, 5b and 5c; ``show`` gets each section's tables as soon as it ends."""
    sizes = QUICK if quick else FULL
    free, ceilings = _free(work, repeats, sizes)
    tables = show(free)
    tables += show(_latency(work, repeats, sizes, ceilings))
    tables += show(_faults(work, repeats, sizes))
    return tables
