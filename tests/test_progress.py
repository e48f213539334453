"""Progress displays are observers of engine events, tested as text with a fixed clock."""

from __future__ import annotations

import io

from headrace.cli._progress import LineProgress, RichProgress
from headrace.cli._render import summary_text
from headrace.engine import BatchProcessed, BatchRead, BatchWritten, RunFinished, RunStarted

EVENTS = [
    RunStarted("flights", ("filter", "derive"), 1000, "bytes"),
    BatchRead(records=500, rejected=2, progress=400),
    BatchProcessed("filter", 500, 120, 380, 0, 0.01),
    BatchProcessed("derive", 120, 120, 0, 0, 0.01),
    BatchWritten(120),
]


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


def test_rich_progress_renders_steps_and_counts() -> None:
    """The terminal display shows the pipeline, per-step counts, dead letters and the bar."""
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, no_color=True)
    progress = RichProgress(console)
    for event in EVENTS:
        progress(event)
    progress(RunFinished({"status": "ok"}))
    text = out.getvalue()
    assert "flights" in text
    assert "filter 120" in text and "derive 120" in text
    assert "2 dead" in text
    assert "120 out" in text


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
