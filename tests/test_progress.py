"""Progress displays are observers of engine events, tested as text with a fixed clock."""

from __future__ import annotations

import io
import logging
import re

import pytest

from headrace.cli._progress import (
    Counters,
    LineProgress,
    RecentRates,
    RichProgress,
    queue_bar,
)
from headrace.cli._render import summary_text
from headrace.engine import (
    BatchProcessed,
    BatchRead,
    BatchWritten,
    BreakerChanged,
    CheckpointCommitted,
    EdgeFill,
    Event,
    RateLimited,
    RetryScheduled,
    RunFinished,
    RunStarted,
    Sampled,
)

EVENTS: list[Event] = [
    RunStarted("flights", ("filter", "derive"), 1000, "bytes"),
    BatchRead(records=500, rejected=2, progress=400),
    BatchProcessed("filter", 500, 120, 380, 0, 0.01),
    BatchProcessed("derive", 120, 120, 0, 0, 0.01),
    BatchWritten(120),
]

# A run where ``derive`` is the bottleneck: the queue in front of it is full, its calls time
# out and are retried, and its breaker for one host is open.
TROUBLE: list[Event] = [
    RetryScheduled("derive", 1, 0.5, "TimeoutError"),
    RetryScheduled("derive", 2, 1.0, "TimeoutError"),
    RetryScheduled("derive", 1, 0.2, "ConnectionError"),
    BreakerChanged("derive", "api.example.com", "open"),
    BreakerChanged("derive", "b.example.com", "open"),
    BreakerChanged("derive", "b.example.com", "closed"),
    RateLimited("derive", "derive", 0.25),
    Sampled(
        (EdgeFill("csv->filter", 2, 4), EdgeFill("filter->derive", 4, 4),
         EdgeFill("derive->sink", 0, 4)),
        (("filter", 1), ("derive", 4)),
    ),
    CheckpointCommitted(position=400, records=118),
]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def test_line_progress_prints_at_most_every_interval() -> None:
    """One line per interval, with records, percent done, written, dead and rate."""
    now = [0.0]
    out = io.StringIO()
    progress = LineProgress(out, interval=5.0, clock=lambda: now[0])
    for event in EVENTS[:2]:
        progress(event)
    assert out.getvalue() == ""
    now[0] = 10.0
    for event in EVENTS[2:]:
        progress(event)
    lines = out.getvalue().splitlines()
    assert lines == [
        "headrace: 502 records read (40%), 0 written, 2 dead, 50 records/s",
    ]


def test_counters_fold_resilience_events() -> None:
    """Retries per step and reason, breakers that are not closed, rate-limit waits, the latest
    gauges and the last checkpoint are all kept."""
    counters = Counters()
    for event in [*EVENTS[1:], *TROUBLE]:
        counters.apply(event)
    assert counters.retries == {"derive": 3}
    assert counters.total_retries == 3
    assert counters.retry_reasons == {("derive", "TimeoutError"): 2,
                                      ("derive", "ConnectionError"): 1}
    assert counters.breakers == {("derive", "api.example.com"): "open"}
    assert counters.open_breakers() == ["derive[api.example.com] open"]
    assert counters.rate_waits == {"derive": 1}
    assert counters.rate_wait_seconds == {"derive": 0.25}
    assert counters.in_flight == {"filter": 1, "derive": 4}
    assert counters.edge_into("derive") == EdgeFill("filter->derive", 4, 4)
    assert counters.edge_into("sink") == EdgeFill("derive->sink", 0, 4)
    assert counters.checkpoint_records == 118
    assert counters.checkpoint_position == 400
    assert counters.step_in == {"filter": 500, "derive": 120}


def test_breakers_name_the_key_only_when_it_is_not_the_step() -> None:
    """A per-step breaker shows as the step; half-open is spelt with a hyphen, after open."""
    counters = Counters()
    counters.apply(BreakerChanged("fetch", "fetch", "half_open"))
    counters.apply(BreakerChanged("enrich", "host-a", "open"))
    assert counters.open_breakers() == ["enrich[host-a] open", "fetch half-open"]


def test_fullest_edge_prefers_the_one_furthest_downstream() -> None:
    """When several queues are equally full the last one is in front of the slow stage."""
    counters = Counters()
    counters.apply(Sampled((EdgeFill("csv->a", 4, 4), EdgeFill("a->b", 4, 4),
                            EdgeFill("b->sink", 1, 4)), ()))
    edge = counters.fullest_edge()
    assert edge is not None and edge.edge == "a->b"
    counters.apply(Sampled((EdgeFill("csv->a", 0, 4), EdgeFill("a->sink", 0, 4)), ()))
    assert counters.fullest_edge() is None


@pytest.mark.parametrize(
    ("queued", "capacity", "bar"),
    [
        (0, 4, "░░░░░░░░ 0/4"),
        (1, 4, "██░░░░░░ 1/4"),
        (3, 4, "██████░░ 3/4"),
        (4, 4, "████████ 4/4"),
        (1, 100, "█░░░░░░░ 1/100"),
        (99, 100, "███████░ 99/100"),
        (0, 0, "░░░░░░░░ 0/0"),
    ],
    ids=["empty", "quarter", "three-quarters", "full", "one-of-many", "almost-full",
         "unbuffered"],
)
def test_queue_bar_is_full_only_when_the_queue_is(queued: int, capacity: int, bar: str) -> None:
    """A full bar means backpressure; anything waiting shows at least one block."""
    assert queue_bar(EdgeFill("a->b", queued, capacity)) == bar


def test_line_progress_adds_retries_breakers_and_fullest_queue() -> None:
    """Retries, open breakers and the fullest queue are appended when there are any."""
    now = [0.0]
    out = io.StringIO()
    progress = LineProgress(out, interval=5.0, clock=lambda: now[0])
    for event in [*EVENTS, *TROUBLE]:
        progress(event)
    now[0] = 10.0
    progress(Sampled((EdgeFill("csv->filter", 1, 4), EdgeFill("filter->derive", 4, 4),
                      EdgeFill("derive->sink", 0, 4)), (("derive", 4),)))
    assert out.getvalue().splitlines() == [
        "headrace: 502 records read (40%), 120 written, 2 dead, 50 records/s, 3 retries, "
        "breaker derive[api.example.com] open, queue derive 4/4",
    ]


def test_line_progress_names_at_most_three_breakers() -> None:
    """Many open per-key breakers are counted rather than listed."""
    progress = LineProgress(io.StringIO(), interval=5.0, clock=lambda: 0.0)
    progress(EVENTS[0])
    for host in "abcde":
        progress(BreakerChanged("fetch", host, "open"))
    line = progress.line(1.0)
    assert line.endswith("breaker fetch[a] open, breaker fetch[b] open, "
                         "breaker fetch[c] open, breaker 2 more")


def test_a_failing_display_logs_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """An observer must not break the run: errors are logged once, then ignored."""
    now = [0.0]
    stream = io.StringIO()
    progress = LineProgress(stream, interval=1.0, clock=lambda: now[0])
    progress(EVENTS[0])
    stream.close()
    with caplog.at_level(logging.WARNING, logger="headrace.cli.progress"):
        for step in range(3):
            now[0] = 2.0 * (step + 1)
            progress(BatchWritten(10))
    assert [r.getMessage() for r in caplog.records] == [
        "progress display: cannot show BatchWritten"
    ]
    assert progress.counters.written == 30


def test_recent_rates_cover_the_last_few_seconds() -> None:
    """The rate follows recent throughput, not the average since the start."""
    rates = RecentRates(window=5.0)
    rates.update(0.0, {})
    assert rates.update(10.0, {"a": 1000}) == {"a": 100.0}
    for t in range(11, 21):
        latest = rates.update(float(t), {"a": 1000})  # stalled since t=10
    assert latest == {"a": 0.0}


def test_rich_progress_renders_steps_and_counts() -> None:
    """The terminal display shows the pipeline, per-step rows, dead letters and the bar."""
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, no_color=True)
    progress = RichProgress(console, clock=lambda: 0.0)
    for event in EVENTS:
        progress(event)
    progress(RunFinished({"status": "ok"}))
    text = plain(out.getvalue())
    assert "flights" in text
    assert re.search(r"filter +120 ", text) and re.search(r"derive +120 ", text)
    assert "2 dead" in text
    assert "120 out" in text


def test_rich_progress_shows_queue_bars_retries_and_open_breakers() -> None:
    """Each step's row has its rate, in-flight calls, retries and the fill of the queue in
    front of it; a full queue shows where the backpressure is; open breakers are listed."""
    from rich.console import Console

    now = [0.0]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    progress = RichProgress(console, clock=lambda: now[0])
    progress(EVENTS[0])
    now[0] = 2.0
    for event in [*EVENTS[1:], *TROUBLE]:
        progress(event)
    progress(RunFinished({"status": "interrupted"}))
    text = plain(out.getvalue())
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.split() and line.split()[0] in ("filter", "derive", "sink")}
    # step, out, records/s, in flight, retries, queue bar, queued/capacity
    assert rows["filter"] == ["filter", "120", "250", "1", "0", "████░░░░", "2/4"]
    assert rows["derive"] == ["derive", "120", "60", "4", "3", "████████", "4/4"]
    assert rows["sink"] == ["sink", "120", "60", "░░░░░░░░", "0/4"]
    assert "breakers: derive[api.example.com] open" in text
    assert "b.example.com" not in text  # closed again
    assert "rate limited: derive 1 wait (0.2s)" in text
    assert "checkpoint: 118 records committed" in text


def test_summary_text_lists_steps() -> None:
    """The human summary has one line per step and names the dead-letter file."""
    summary = {
        "status": "ok", "records_in": 10, "records_out": 7, "records_filtered": 2,
        "records_dead": 1, "duration_s": 0.5, "dead_letter": "out/x.dead.jsonl",
        "steps": [{"id": "filter", "in": 10, "out": 8, "filtered": 2, "dead": 0,
                   "p50_ms": 1.0, "p95_ms": 2.0}],
    }
    text = summary_text(summary)
    assert text.splitlines()[0] == "ok: 10 in, 7 out, 2 filtered, 1 dead in 0.50s"
    assert "filter" in text and "out/x.dead.jsonl" in text
    assert "resume with" not in text


def test_summary_text_has_retries_p99_and_a_resume_hint() -> None:
    """Per step: retries and p50/p95/p99; an interrupted resumable run says how to resume."""
    summary = {
        "status": "interrupted", "records_in": 1200, "records_out": 1100,
        "records_filtered": 0, "records_dead": 100, "duration_s": 3.25,
        "interrupted_by": "SIGINT",
        "steps": [{"id": "enrich", "in": 1200, "out": 1100, "filtered": 0, "dead": 100,
                   "retries": 37, "p50_ms": 1.5, "p95_ms": 20.25, "p99_ms": 310.0}],
        "checkpoint": {"records": 1200, "resumed_after": 500, "resumable": True,
                       "run_dir": ".headrace/runs/flights"},
    }
    lines = summary_text(summary).splitlines()
    assert lines[1].split() == ["step", "in", "out", "filtered", "dead", "retries",
                                "p50", "ms", "p95", "ms", "p99", "ms"]
    assert lines[2].split() == ["enrich", "1,200", "1,100", "0", "100", "37", "1.5", "20.2",
                                "310.0"]
    assert "  checkpoint: 1,200 records committed (500 by earlier runs)" in lines
    assert lines[-1] == ("  resume with: headrace run PIPELINE --resume  "
                         "(or: headrace resume .headrace/runs/flights)")


def test_summary_text_of_a_finished_run_has_no_resume_hint() -> None:
    """A run that published its output shows its checkpoint but nothing to resume."""
    summary = {
        "status": "ok", "records_in": 5, "records_out": 5, "records_filtered": 0,
        "records_dead": 0, "duration_s": 0.1, "steps": [],
        "checkpoint": {"records": 5, "resumed_after": None, "resumable": False,
                       "run_dir": "/tmp/runs/x"},
    }
    text = summary_text(summary)
    assert "  checkpoint: 5 records committed" in text.splitlines()
    assert "resume with" not in text
