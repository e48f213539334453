"""The third-party plugin package in examples/plugin-example, installed as users install it:
discovered through its entry points, run in its pipeline, killed and resumed, checked by the
conformance suite; and docs/plugins.md, the tutorial that builds it, kept true to its files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import headrace.plugin

from .conftest import HEADRACE, assert_accounted, read_jsonl, run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin-example"
TUTORIAL = ROOT / "docs" / "plugins.md"
PLUGINS = {("source", "example-sequence"), ("step", "example-label"), ("sink", "example-ndjson")}


def example_version() -> str:
    with (EXAMPLE / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The example folder copied to tmp_path (the run writes out/ and .headrace/ there)."""
    work = tmp_path / "plugin-example"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
        "out", ".headrace", "__pycache__", "*.egg-info", ".pytest_cache"))
    return work / "pipeline.yaml"


# -- discovery -------------------------------------------------------------------------------

def test_plugins_list_shows_the_three_with_their_distribution() -> None:
    """plugins list finds the package's source, step and sink by entry point, naming the
    distribution headrace-example and its version."""
    result = run_cli("plugins", "list", "--json")
    assert result.code == 0, result.stderr
    listed = {(p["kind"], p["name"]): p for p in json.loads(result.stdout)}
    assert set(listed) >= PLUGINS, "is examples/plugin-example installed? (make test does it)"
    for key in PLUGINS:
        assert listed[key]["distribution"] == "headrace-example"
        assert listed[key]["version"] == example_version()
        assert listed[key]["target"].startswith("headrace_example:")
    text = run_cli("plugins", "list").stdout
    assert re.search(r"example-sequence\s+headrace-example\s+" + re.escape(example_version()),
                     text), text


def test_plugins_show_renders_every_option_with_its_description() -> None:
    """plugins show example-sequence prints the summary and each option with a description."""
    from headrace_example import SequenceOptions

    result = run_cli("plugins", "show", "example-sequence")
    assert result.code == 0, result.stderr
    assert "headrace-example" in result.stdout
    assert "simulated sensor readings" in result.stdout
    for name, field in SequenceOptions.model_fields.items():
        assert name in result.stdout
        assert field.description and field.description[:30] in result.stdout


@pytest.mark.parametrize("kind,name", sorted(PLUGINS), ids=[n for _, n in sorted(PLUGINS)])
def test_every_option_is_described_and_the_example_validates(kind: str, name: str) -> None:
    """Each plugin has a summary, a description on every option, and example options its
    Options model accepts."""
    cls = headrace.plugin.load_plugin(kind, name)
    assert cls.summary
    assert all(f.description for f in cls.Options.model_fields.values())
    assert cls.example is not None
    cls.Options.model_validate(cls.example)


# -- the pipeline ----------------------------------------------------------------------------

def test_the_example_pipeline_labels_and_accounts_for_every_reading(example: Path) -> None:
    """headrace run pipeline.yaml: 5,000 readings in; the 20 without a value dead-lettered by
    example-label; the rest labelled by their value, the west sensor filtered out; the
    summary's counts add up and carry the step's counters."""
    result = run_cli("run", str(example), "--json")
    assert result.code == 0, result.stderr
    summary = result.summary
    assert_accounted(summary)
    assert (summary["records_in"], summary["records_dead"]) == (5000, 20)
    out = read_jsonl(example.parent / "out" / "readings.ndjson")
    dead = read_jsonl(example.parent / "out" / "readings.dead.jsonl")
    assert len(out) == summary["records_out"] and summary["records_filtered"] > 0
    assert [d["record"]["id"] for d in dead] == list(range(250, 5001, 250))
    assert {d["error"] for d in dead} == {"MissingValue"}
    assert {d["step"] for d in dead} == {"example-label"}
    ids = [r["id"] for r in out]
    assert ids == sorted(set(ids))
    assert list(out[0]) == ["id", "sensor", "value", "label", "at"]
    for record in out:
        value = record["value"]
        assert record["label"] == ("low" if value < 25 else "normal" if value < 75 else "high")
        assert record["sensor"] != "west"
    assert summary["plugin_metrics"]["example-label"] == {"labelled": 4980, "missing": 20}
    assert not list(example.parent.glob("out/.*"))  # no partial file left behind


def test_validate_checks_the_steps_column_against_the_sources_schema(example: Path) -> None:
    """validate: the source's schema lets example-label refuse an unknown column up front,
    naming the option's file:line."""
    assert run_cli("validate", str(example)).code == 0
    text = example.read_text(encoding="utf-8").replace("column: value", "column: valu")
    example.write_text(text, encoding="utf-8")
    result = run_cli("validate", str(example))
    assert result.code == 2
    assert "pipeline.yaml:14" in result.stderr and "no column 'valu'" in result.stderr


def _ledger_records(folder: Path) -> int:
    """Records the running pipeline's last checkpoint covers (0 before the first one)."""
    path = folder / ".headrace" / "runs" / "plugin-example" / "ledger.sqlite"
    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            rows = con.execute("SELECT checkpoint FROM run").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return 0
    return int(json.loads(rows[0][0])["records"]) if rows and rows[0][0] else 0


LONG = ("--set", "source.count=40000", "--set", "runtime.checkpoint_interval=0.2")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_mid_run_and_resume_gives_every_record_exactly_once(
        example: Path, tmp_path: Path) -> None:
    """A run of 40,000 readings paced at 10,000/s is SIGKILLed after its first checkpoints;
    --resume continues it, and the output and dead letters equal an uninterrupted run's,
    byte for byte: every record exactly once."""
    reference = tmp_path / "reference"
    shutil.copytree(example.parent, reference)
    done = run_cli("run", str(reference / "pipeline.yaml"), *LONG, timeout=120)
    assert done.code == 0, done.stderr

    paced = (*LONG, "--set", "source.rate=10000")
    proc = subprocess.Popen([*HEADRACE, "run", str(example), *paced],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"})
    try:
        deadline = time.monotonic() + 60
        while _ledger_records(example.parent) < 5000 and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()
    committed = _ledger_records(example.parent)
    assert 0 < committed < 40000

    resumed = run_cli("run", str(example), *paced, "--resume", "--json", timeout=120)
    assert resumed.code == 0, resumed.stderr
    assert resumed.summary["checkpoint"]["resumed_after"] == committed
    for name in ("readings.ndjson", "readings.dead.jsonl"):
        got, want = example.parent / "out" / name, reference / "out" / name
        if name.endswith("dead.jsonl"):  # attempt times and batch ranges differ by run
            assert _dead_ids(got) == _dead_ids(want) == list(range(250, 40001, 250))
        else:
            assert got.read_bytes() == want.read_bytes()
    ids = [r["id"] for r in read_jsonl(example.parent / "out" / "readings.ndjson")]
    assert len(ids) == len(set(ids))
    assert not list(example.parent.glob("out/.*"))


def _dead_ids(path: Path) -> list[int]:
    return [d["record"]["id"] for d in read_jsonl(path)]


# -- conformance -----------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_the_example_packages_own_tests_pass() -> None:
    """examples/plugin-example/tests (the conformance suite on all three plugins, through
    headrace.testing) pass, run as the package's author runs them: pytest in its folder."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE, capture_output=True, text=True, timeout=280, check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", proc.stdout) and " skipped" not in proc.stdout


# -- the tutorial ----------------------------------------------------------------------------

def _reference_section() -> str:
    text = TUTORIAL.read_text(encoding="utf-8")
    _, found, reference = text.partition("\n## API reference")
    assert found, "docs/plugins.md has no '## API reference' section"
    return reference


@pytest.mark.parametrize("name", headrace.plugin.__all__)
def test_the_api_reference_describes_every_public_name(name: str) -> None:
    """Every name in headrace.plugin.__all__ has an entry in docs/plugins.md's reference."""
    assert re.search(rf"^#### `{re.escape(name)}`$", _reference_section(), re.MULTILINE), \
        f"{name} has no '#### `{name}`' entry in the API reference of docs/plugins.md"


SNIPPET = re.compile(
    r"<!-- snippet: (?P<path>\S+) -->\n```[a-z]*\n(?P<code>.*?)```\n", re.DOTALL)


def test_the_tutorial_quotes_the_example_package_as_it_is() -> None:
    """Each code block marked ``<!-- snippet: PATH -->`` in docs/plugins.md is a verbatim
    part of that file of examples/plugin-example (a whole file, or consecutive lines)."""
    snippets = SNIPPET.findall(TUTORIAL.read_text(encoding="utf-8"))
    assert len(snippets) >= 6
    quoted = {path for path, _ in snippets}
    assert {"pyproject.toml", "pipeline.yaml", "src/headrace_example/_sequence.py",
            "src/headrace_example/_label.py", "src/headrace_example/_ndjson.py"} <= quoted
    for path, code in snippets:
        text = (EXAMPLE / path).read_text(encoding="utf-8")
        assert code in text, f"docs/plugins.md quotes {path}, but the file says otherwise"


def test_the_reference_names_nothing_that_is_not_public() -> None:
    """The reference's entries name only what headrace.plugin exports (no stale entries)."""
    headings = re.findall(r"^#### `(\w+)`", _reference_section(), re.MULTILINE)
    assert headings, "the reference has no #### `name` headings"
    assert set(headings) <= set(headrace.plugin.__all__), set(headings) - set(
        headrace.plugin.__all__)
