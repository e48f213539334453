"""The package's plugins pass headrace's conformance suite, and do their own job, tested with
the kit plugin authors get: ``headrace.testing``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from headrace_example import SequenceOptions, SequenceSource

from headrace.plugin import PluginContext
from headrace.testing import FakeClock, ListSink, assert_conforms, run_pipeline

#: Input for the step: values on both sides of a threshold, a missing one, a text number.
READINGS = [
    {"id": 1, "value": 12.5},
    {"id": 2, "value": 50.0},
    {"id": 3, "value": None},
    {"id": 4, "value": 99.0},
    {"id": 5, "value": 49.99},
]


def test_the_source_conforms(tmp_path: Path) -> None:
    """example-sequence, with its example options: lifecycle, stopping, resume after any
    batch, fingerprint, schema."""
    assert_conforms("source", "example-sequence", base_dir=tmp_path)


def test_the_step_conforms(tmp_path: Path) -> None:
    """example-label over readings: lifecycle, one output per input record or a dead
    letter, thread safety as declared."""
    assert_conforms("step", "example-label", records=READINGS, base_dir=tmp_path)


def test_the_sink_conforms(tmp_path: Path) -> None:
    """example-ndjson: lifecycle, atomic (nothing under the final name before finish, and
    nothing after abort), resumable and idempotent (a replay after a checkpoint leaves every
    record exactly once)."""

    def read_output(options: dict[str, Any]) -> list[dict[str, Any]]:
        text = (tmp_path / options["path"]).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    assert_conforms("sink", "example-ndjson", read_output=read_output, base_dir=tmp_path)


def test_a_pipeline_of_the_three_accounts_for_every_record(tmp_path: Path) -> None:
    """source -> step -> sink through the real engine: readings without a value are dead
    letters, the others are labelled by their value."""
    outcome = run_pipeline({
        "source": {"use": "example-sequence", "count": 100, "missing_every": 10,
                   "batch_size": 16},
        "steps": [{"use": "example-label", "thresholds": [50], "labels": ["low", "high"]}],
        "sink": {"use": "example-ndjson", "path": "out/readings.ndjson"},
        "runtime": {"max_failures": 10},
    }, base_dir=tmp_path)
    assert outcome.status == "ok", outcome.error
    written = [json.loads(line) for line in
               (tmp_path / "out" / "readings.ndjson").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in written] == [i for i in range(1, 101) if i % 10]
    assert all(r["label"] == ("low" if r["value"] < 50 else "high") for r in written)
    assert [d["record"]["id"] for d in outcome.dead] == list(range(10, 101, 10))
    assert outcome.summary["plugin_metrics"]["example-label"] == {"labelled": 90, "missing": 10}


def test_the_step_dead_letters_a_text_that_is_no_number() -> None:
    """A text column is converted; a text that is not a number makes the step raise
    DataError, and the engine isolates that one record as a dead letter."""
    records = [{"id": 1, "value": "10"}, {"id": 2, "value": "ten"}, {"id": 3, "value": "90"}]
    outcome = run_pipeline({
        "source": {"use": "headrace.testing:ListSource", "records": records},
        "steps": [{"use": "example-label"}],
        "sink": {"use": "headrace.testing:ListSink", "name": "labels"},
        "runtime": {"max_failures": 1},
    })
    assert outcome.status == "ok", outcome.error
    assert [(r["id"], r["label"]) for r in outcome.records] == [(1, "low"), (3, "high")]
    assert [(d["record"]["id"], d["error"]) for d in outcome.dead] == [(2, "ArrowInvalid")]
    ListSink.clear("labels")


@pytest.mark.parametrize("rate", [100.0, 2500.0], ids=["slow", "fast"])
def test_the_rate_paces_batches_on_the_runs_clock(tmp_path: Path, rate: float) -> None:
    """With ``rate``, the source waits on context.clock (a FakeClock here: no real sleep)
    count / rate seconds in all, in slices of at most 0.25 s."""
    clock = FakeClock()
    source = SequenceSource(SequenceOptions(count=1000, batch_size=100, rate=rate),
                            PluginContext("example-sequence", tmp_path, clock=clock))

    async def drain() -> int:
        async with source:
            return sum([batch.num_rows async for batch in source.batches()])

    assert anyio.run(drain) == 1000
    assert clock.now() - 1000.0 == pytest.approx(1000 / rate)
    assert max(clock.sleeps) <= 0.25
