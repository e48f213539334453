"""headrace.testing: the list source and sink, the fake clock, run_pipeline, and the
conformance suite, which passes on the built-ins and fails, saying why, on broken plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from pydantic import Field

from headrace.errors import ConfigError
from headrace.plugin import Batch, Options, Position, Sink, Source, Step, StepOutput
from headrace.testing import (
    SAMPLE_RECORDS,
    ConformanceReport,
    FakeClock,
    ListSink,
    ListSource,
    assert_conforms,
    check_installed,
    check_plugin,
    parse_settings,
    run_pipeline,
)

SHORT = 0.5  # seconds a deliberately hanging call is given before the check gives up

# -- run_pipeline ------------------------------------------------------------------------


def test_list_source_filter_list_sink(tmp_path: Path) -> None:
    """A dict pipeline runs through the engine; the ListSink's records come back."""
    outcome = run_pipeline({
        "source": {"use": "headrace.testing:ListSource",
                   "records": [{"n": i, "s": f"r{i}"} for i in range(7)], "batch_size": 3},
        "steps": [{"use": "filter", "where": "n % 2 = 0"}],
        "sink": {"use": "headrace.testing:ListSink", "name": "evens"},
    }, base_dir=tmp_path)
    assert outcome.status == "ok", outcome.error
    assert outcome.records == [{"n": 0, "s": "r0"}, {"n": 2, "s": "r2"}, {"n": 4, "s": "r4"},
                               {"n": 6, "s": "r6"}]
    assert ListSink.collected("evens") == outcome.records
    assert outcome.summary["records_filtered"] == 3
    assert outcome.dead == [] and outcome.error is None


def test_yaml_text_without_base_dir() -> None:
    """YAML text runs in a temporary folder; a second run replaces the collected records."""
    text = textwrap.dedent("""\
        version: 1
        name: yaml
        source: {use: "headrace.testing:ListSource", records: [{a: 1}, {a: 2}]}
        sink: {use: "headrace.testing:ListSink"}
    """)
    assert run_pipeline(text).records == [{"a": 1}, {"a": 2}]
    assert run_pipeline(text).records == [{"a": 1}, {"a": 2}]


def test_a_pipeline_file_with_dead_letters(tmp_path: Path) -> None:
    """A path runs that file; dead letters come back parsed."""
    (tmp_path / "in.jsonl").write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: dead\nsource: {use: jsonl, path: in.jsonl}\n"
        "sink: {use: 'headrace.testing:ListSink'}\nruntime: {max_failures: 1}\n")
    outcome = run_pipeline(tmp_path / "p.yaml")
    assert outcome.status == "ok"
    assert outcome.records == [{"a": 1}, {"a": 3}]
    assert [(d["error"], d["position"]["line"]) for d in outcome.dead] == [("ParseError", 2)]


def test_a_failing_run_reports_its_error(tmp_path: Path) -> None:
    """A sink that cannot write ends the run failed, with the error as one line."""
    (tmp_path / "taken").mkdir()
    outcome = run_pipeline({
        "source": {"use": "headrace.testing:ListSource", "records": [{"a": 1}]},
        "sink": {"use": "jsonl", "path": "taken"},
    }, base_dir=tmp_path)
    assert outcome.status == "failed"
    assert outcome.error is not None and "is a directory" in outcome.error


def test_a_run_failed_by_max_failures_says_why(tmp_path: Path) -> None:
    """Dead letters past max_failures fail the run, and ``error`` says so (it was None)."""
    (tmp_path / "in.jsonl").write_text('{"a": 1}\nnot json\nnor this\n')
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: over\nsource: {use: jsonl, path: in.jsonl}\n"
        "sink: {use: 'headrace.testing:ListSink'}\nruntime: {max_failures: 1}\n")
    outcome = run_pipeline(tmp_path / "p.yaml")
    assert outcome.status == "failed"
    assert outcome.error == "2 records dead-lettered (max_failures: 1)"


def test_a_plugin_may_not_replace_the_base_class_lifecycle(tmp_path: Path) -> None:
    """A plugin class defining ``_close`` (or another reserved name) is refused when it is
    created, with a message naming the name, rather than breaking a run at its end."""
    from headrace.plugin import RESERVED_NAMES

    assert "_close" in RESERVED_NAMES
    with pytest.raises(TypeError, match=r"defines '_close'.*rename it"):
        class Clobbering(Sink):
            async def write(self, batch: Batch) -> None:
                return None

            async def _close(self) -> None:  # type: ignore[override]
                return None
    (tmp_path / "myplug.py").write_text(
        "from headrace.builtins.sinks import JsonlSink\n\n"
        "class Sink(JsonlSink):\n    async def _close(self):\n        return None\n")
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: clobber\nsource: {use: jsonl, path: in.jsonl}\n"
        "sink: {use: 'myplug:Sink', path: out/o.jsonl}\n")
    result = subprocess.run([sys.executable, "-m", "headrace", "validate",
                             str(tmp_path / "p.yaml")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
    assert "myplug.Sink defines '_close'" in result.stderr and "Traceback" not in result.stderr


def test_a_broken_pipeline_raises(tmp_path: Path) -> None:
    """Problems validate would report raise, as ConfigError, rather than run."""
    with pytest.raises(ConfigError, match="batch_size"):
        run_pipeline({"source": {"use": "headrace.testing:ListSource", "records": [],
                                 "batch_size": 0},
                      "sink": {"use": "headrace.testing:ListSink"}}, base_dir=tmp_path)


def test_the_user_config_file_is_not_read(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A user config on the machine does not change a test's run; one passed in does."""
    from headrace.config import load_user_config

    config = tmp_path / "user.toml"
    config.write_text('[plugins.filter]\nwhere = "a > 1"\n')
    monkeypatch.setenv("HEADRACE_CONFIG", str(config))
    pipeline = {"source": {"use": "headrace.testing:ListSource", "records": [{"a": 1}, {"a": 2}]},
                "steps": [{"use": "filter"}],
                "sink": {"use": "headrace.testing:ListSink"}}
    with pytest.raises(ConfigError, match="where"):
        run_pipeline(pipeline, base_dir=tmp_path)
    outcome = run_pipeline(pipeline, base_dir=tmp_path, user_config=load_user_config())
    assert outcome.records == [{"a": 2}]


FAILED_ONCE: dict[str, bool] = {}


class FailOnceOptions(Options):
    at: int = Field(description="The value of `n` at which the first run fails.")


class FailOnce(Step):
    """Fails the run at record ``at`` the first time it sees it."""

    summary = "fails once"
    Options: ClassVar[type[FailOnceOptions]] = FailOnceOptions
    options: FailOnceOptions

    def process(self, batch: Batch) -> StepOutput:
        if self.options.at in batch.to_arrow().column("n").to_pylist() and not FAILED_ONCE:
            FAILED_ONCE["failed"] = True
            raise RuntimeError("the first run fails here")
        return StepOutput(batch)


def test_resume_continues_a_failed_run(tmp_path: Path) -> None:
    """After a failed run, resume=True ends with every record exactly once in the ListSink."""
    FAILED_ONCE.clear()
    pipeline = {
        "source": {"use": "headrace.testing:ListSource",
                   "records": [{"n": i} for i in range(10)], "batch_size": 2},
        "steps": [{"use": "tests.test_testing_kit:FailOnce", "at": 7, "on_error": "fail"}],
        "sink": {"use": "headrace.testing:ListSink", "name": "resumed"},
        "runtime": {"checkpoint_interval": 0.000001},
    }
    first = run_pipeline(pipeline, base_dir=tmp_path)
    assert first.status == "failed"
    assert len(first.records) < 10
    second = run_pipeline(pipeline, base_dir=tmp_path, resume=True)
    assert second.status == "ok", second.error
    assert second.records == [{"n": i} for i in range(10)]


# -- FakeClock -----------------------------------------------------------------------------


def test_fake_clock_sleeps_in_virtual_time() -> None:
    """sleep() returns at once, moves time and is recorded; advance() moves time alone."""
    clock = FakeClock(start=10.0)

    async def main() -> None:
        await clock.sleep(2.5)
        await clock.sleep(0.5)

    anyio.run(main)
    clock.advance(4)
    assert clock.now() == 17.0
    assert clock.sleeps == [2.5, 0.5]


def test_fake_clock_gate_holds_sleepers() -> None:
    """With a gate, sleep() waits until the gate is set, then time has moved by its length."""
    clock = FakeClock(start=0.0)
    clock.gate = anyio.Event()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(3)
        woke.append(clock.now())

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()
            assert woke == [] and clock.sleeps == [3]
            assert clock.gate is not None
            clock.gate.set()

    anyio.run(main)
    assert woke == [3.0]


# -- the conformance suite on working plugins -------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def statuses(report: ConformanceReport) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


def test_jsonl_source_conforms(tmp_path: Path) -> None:
    """The jsonl source passes every check, resuming across several blocks."""
    lines = [json.dumps({"id": i, "text": "x" * 60, "v": None if i % 7 else i / 2})
             for i in range(400)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    report = assert_conforms("source", "jsonl", options={"path": "in.jsonl", "block_size": 4096},
                             base_dir=tmp_path)
    assert statuses(report) == {"class": "passed", "lifecycle": "passed",
                                "source-batches": "passed", "resumable": "passed"}
    detail = report.result("resumable").detail  # "resumed after batches 1, 6, 10 of 10"
    assert int(detail.rsplit(" of ", 1)[1]) >= 3, detail


def test_csv_source_conforms(tmp_path: Path) -> None:
    """The csv source passes every check, bad lines (dead letters) included."""
    rows = [f"{i},name {i},{i * 1.5}" for i in range(300)]
    rows[50] = '51,"unbalanced,1'
    (tmp_path / "in.csv").write_text("id,name,score\n" + "\n".join(rows) + "\n")
    report = assert_conforms("source", "csv", options={"path": "in.csv", "block_size": 4096},
                             base_dir=tmp_path)
    assert report.result("source-batches").detail.endswith("1 rejected")


def test_jsonl_sink_conforms(tmp_path: Path) -> None:
    """The jsonl sink passes lifecycle, atomic, resumable and idempotent, read back."""
    report = assert_conforms("sink", "jsonl", options={"path": "out/o.jsonl"},
                             read_output=lambda options: read_jsonl(tmp_path / options["path"]),
                             base_dir=tmp_path)
    assert set(statuses(report).values()) == {"passed"}


def test_filter_step_conforms(tmp_path: Path) -> None:
    """The filter step accounts for every sample record, also from several threads."""
    report = assert_conforms("step", "filter", options={"where": "score > 1"},
                             base_dir=tmp_path)
    assert set(statuses(report).values()) == {"passed"}
    assert report.result("step").detail.startswith(f"{len(SAMPLE_RECORDS)} records in")


def test_the_list_plugins_conform(tmp_path: Path) -> None:
    """ListSource and ListSink keep what they declare; ListSink is not atomic."""
    assert_conforms("source", ListSource, base_dir=tmp_path)
    report = assert_conforms("sink", "headrace.testing:ListSink", base_dir=tmp_path,
                             read_output=lambda options: ListSink.collected(options["name"]))
    assert report.result("atomic").status == "skipped"


# -- the conformance suite on broken plugins -------------------------------------------


class CountOptions(Options):
    count: int = Field(default=9, description="How many records.")


class RepeatingSource(Source):
    """Resumes one record too early: the record before the cut comes twice."""

    summary = "repeats a record on resume"
    Options: ClassVar[type[CountOptions]] = CountOptions
    options: CountOptions
    resumable = True
    start = 0

    def fingerprint(self) -> dict[str, Any]:
        return {"count": self.options.count}

    async def resume(self, token: dict[str, Any]) -> None:
        self.start = int(token["row"]) - 1

    async def batches(self) -> AsyncIterator[Batch]:
        for lo in range(self.start, self.options.count, 3):
            hi = min(lo + 3, self.options.count)
            yield Batch.from_rows([{"i": i} for i in range(lo, hi)],
                                  position=Position("r", lo, hi, "row", next_row=hi))


def test_a_source_that_repeats_on_resume_fails(tmp_path: Path) -> None:
    """resumable fails, naming the repeated record."""
    report = check_plugin("source", RepeatingSource, base_dir=tmp_path)
    result = report.result("resumable")
    assert result.status == "failed"
    assert "repeated" in result.detail and '{"i": 2}' in result.detail
    assert not report.ok and report.failures == [result]
    with pytest.raises(AssertionError, match="FAILED  resumable"):
        report.assert_ok()


STORE: list[dict[str, Any]] = []


class AppendingSink(Sink):
    """Declares idempotent and resumable, but resume forgets nothing: replays duplicate."""

    summary = "appends, even on replay"
    resumable = True
    idempotent = True

    async def write(self, batch: Batch) -> None:
        STORE.extend(batch.to_rows())

    async def open(self) -> None:
        if not self.checkpointing:
            STORE.clear()

    async def checkpoint(self) -> dict[str, Any]:
        return {"records": len(STORE)}

    async def resume(self, state: dict[str, Any]) -> None:
        if not state:  # a fresh run; else it should cut STORE back to state["records"]
            STORE.clear()


def test_a_sink_that_duplicates_on_replay_fails(tmp_path: Path) -> None:
    """idempotent fails, counting the duplicated records; resuming without replay passes."""
    report = check_plugin("sink", AppendingSink, base_dir=tmp_path,
                          read_output=lambda options: list(STORE))
    assert report.result("resumable").status == "passed"
    result = report.result("idempotent")
    assert result.status == "failed"
    assert "duplicated" in result.detail and f"wrote {len(SAMPLE_RECORDS)}" in result.detail


class BareOptions(Options):
    path: str
    limit: int = 3


class UndescribedStep(Step):
    summary = "options without descriptions"
    Options: ClassVar[type[BareOptions]] = BareOptions

    def process(self, batch: Batch) -> StepOutput:
        return StepOutput(batch)


def test_options_without_descriptions_fail_the_class_check(tmp_path: Path) -> None:
    """class fails naming the undescribed options; without options the rest is skipped."""
    report = check_plugin("step", UndescribedStep, base_dir=tmp_path)
    result = report.result("class")
    assert result.status == "failed" and "path, limit" in result.detail
    skipped = [r for r in report.results if r.name != "class"]
    assert {r.status for r in skipped} == {"skipped"}
    assert all("declare `example` options" in r.detail for r in skipped)


class HangingCloseSink(Sink):
    summary = "close never returns"

    async def write(self, batch: Batch) -> None:
        pass

    async def close(self) -> None:
        await anyio.sleep_forever()


class UnclosedSource(Source):
    """Overrides __aexit__ and never closes."""

    summary = "close is never called"

    async def batches(self) -> AsyncIterator[Batch]:
        yield Batch.from_rows([{"a": 1}], position=Position("u", 0, 1, "row", next_row=1))

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class LeakingStep(Step):
    """Starts a task in open() that close() leaves running."""

    summary = "leaks a task"

    async def open(self) -> None:
        import asyncio

        self.task = asyncio.get_running_loop().create_task(anyio.sleep_forever())

    def process(self, batch: Batch) -> StepOutput:
        return StepOutput(batch)


@pytest.mark.parametrize(("kind", "plugin", "expected"), [
    ("sink", HangingCloseSink, f"close() did not return within {SHORT:g} s"),
    ("source", UnclosedSource, "close() was not called"),
    ("step", LeakingStep, "still running after close(): task"),
], ids=["close-hangs", "close-never-called", "task-left-running"])
def test_lifecycle_failures_are_reported(tmp_path: Path, kind: str, plugin: type,
                                         expected: str) -> None:
    """A close that hangs, is never called, or leaves a task running fails lifecycle."""
    report = check_plugin(kind, plugin, base_dir=tmp_path, timeout=SHORT)
    result = report.result("lifecycle")
    assert result.status == "failed"
    assert expected in result.detail


class PathOptions(Options):
    path: str = Field(description="Output file.")


class OverwritingSink(Sink):
    """Declares atomic but writes straight to its final file."""

    summary = "not atomic"
    Options: ClassVar[type[PathOptions]] = PathOptions
    options: PathOptions
    atomic = True

    def _append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.context.resolve_path(self.options.path), "a", encoding="utf-8") as out:
            out.writelines(json.dumps(r) + "\n" for r in rows)

    async def write(self, batch: Batch) -> None:
        await anyio.to_thread.run_sync(self._append, batch.to_rows())

    async def open(self) -> None:
        self.context.resolve_path(self.options.path).write_text("")


def test_a_sink_that_is_not_atomic_fails(tmp_path: Path) -> None:
    """atomic and lifecycle fail when writes show under the final name before finish."""
    report = check_plugin("sink", OverwritingSink, options={"path": "o.jsonl"},
                          base_dir=tmp_path)
    assert report.result("atomic").status == "failed"
    assert "the output changed before finish()" in report.result("atomic").detail
    assert report.result("lifecycle").status == "failed"
    assert report.result("idempotent").detail == "does not declare idempotent"


class MiscountingStep(Step):
    """Drops a record without counting it as filtered."""

    summary = "loses records"

    def process(self, batch: Batch) -> StepOutput:
        return StepOutput(batch.slice(1, batch.num_rows))


def test_a_step_that_loses_records_fails(tmp_path: Path) -> None:
    """step fails: the records out, filtered and dead do not add up to those in."""
    result = check_plugin("step", MiscountingStep, base_dir=tmp_path).result("step")
    assert result.status == "failed"
    assert "records in, but" in result.detail


def test_the_report_has_one_line_per_check(tmp_path: Path) -> None:
    """format() gives a heading and one line per check, skipped reasons included."""
    text = check_plugin("step", "filter", options={"where": "id > 2"},
                        base_dir=tmp_path).format()
    lines = text.splitlines()
    assert lines[0] == "step filter: 4 passed, 0 failed, 0 skipped"
    assert [line.split()[1] for line in lines[1:]] == ["class", "lifecycle", "step",
                                                       "thread-safe"]


# -- what the CLI calls --------------------------------------------------------------------


def test_check_installed_with_settings() -> None:
    """--set values become options; an installed step is checked by name."""
    options = parse_settings(["where=score > 1", "nested.key=3"])
    assert options == {"where": "score > 1", "nested": {"key": 3}}
    report = check_installed("step", "filter", {"where": "score > 1"})
    assert report.ok, report.format()


def test_check_installed_needs_a_kind_for_ambiguous_names() -> None:
    """A name that is a source, a step and a sink asks for --kind."""
    with pytest.raises(ConfigError, match="names a source, a step and a sink") as caught:
        check_installed(None, "http")
    assert caught.value.hint == "choose one with --kind source|step|sink"


def test_check_installed_sink_writes_into_a_temporary_folder(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A sink checked from the CLI leaves nothing in the current folder."""
    monkeypatch.chdir(tmp_path)
    report = check_installed("sink", "jsonl", {"path": "out.jsonl"})
    assert report.ok, report.format()
    assert report.result("idempotent").status == "skipped"
    assert list(tmp_path.iterdir()) == []


# -- the pytest plugin -----------------------------------------------------------------


def test_the_pytest_plugin_fixtures(tmp_path: Path) -> None:
    """An author's test file uses fake_clock, run_pipeline and plugin_conformance."""
    (tmp_path / "test_author.py").write_text(textwrap.dedent("""\
        def test_fixtures(fake_clock, run_pipeline, plugin_conformance, tmp_path):
            fake_clock.advance(1)
            assert fake_clock.now() == 1001.0
            outcome = run_pipeline({
                "source": {"use": "headrace.testing:ListSource", "records": [{"a": 1}]},
                "sink": {"use": "jsonl", "path": "out.jsonl"}})
            assert outcome.status == "ok"
            assert (tmp_path / "out.jsonl").read_text() == '{"a": 1}\\n'
            plugin_conformance("source", "headrace.testing:ListSource").assert_ok()
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:headrace",
         "-p", "headrace.testing.pytest_plugin", "test_author.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_reference_lists_every_check() -> None:
    """docs/testing-plugins.md has a row for each check of each kind."""
    from headrace.testing._conformance import CHECKS

    text = (Path(__file__).parent.parent / "docs" / "testing-plugins.md").read_text("utf-8")
    for kind, checks in CHECKS.items():
        for name, _ in [("class", None), *checks]:
            assert f"| `{name}` | " in text, (kind, name)
