"""The command line: exit codes, one-line errors, stdout/stderr split, init/schema/plugins."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import assert_accounted, run_cli

GOOD = """
version: 1
name: t
source:
  use: csv
  path: in.csv
steps:
  - use: filter
    where: "x > 1"
  - use: derive
    columns:
      y: "x * 10"
sink:
  use: parquet
  path: out/o.parquet
"""


@pytest.fixture
def pipeline(write) -> Path:  # type: ignore[no-untyped-def]
    write("in.csv", "x,name\n1,a\n2,b\n3,c\n")
    return write("p.yaml", GOOD)  # type: ignore[no-any-return]


def test_run_writes_output_and_json_summary(pipeline: Path) -> None:
    """run --json: exit 0, summary on stdout, output file, summary.json in the run dir."""
    result = run_cli("run", str(pipeline), "--json")
    assert result.code == 0, result.stderr
    summary = result.summary
    assert summary["status"] == "ok"
    assert (summary["records_in"], summary["records_out"], summary["records_filtered"]) == (3, 2, 1)
    assert_accounted(summary)
    assert [s["id"] for s in summary["steps"]] == ["filter", "derive"]
    table = pq.read_table(pipeline.parent / "out" / "o.parquet")
    assert table.to_pydict() == {"x": [2, 3], "name": ["b", "c"], "y": [20, 30]}
    stored = json.loads((pipeline.parent / ".headrace/runs/t/summary.json").read_text())
    assert stored["records_out"] == 2
    assert "Traceback" not in result.stderr


def test_validate_ok_and_json(pipeline: Path) -> None:
    """validate checks plugins and binds expressions against the source's columns."""
    result = run_cli("validate", str(pipeline), "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["expressions_checked_against_data"] == ["filter", "derive"]


BAD_CONFIGS = {
    "unknown-plugin": (("use: parquet", "use: parquett"), "p.yaml:13", "did you mean 'parquet'"),
    "wrong-kind": (("use: derive", "use: csv"), "p.yaml:9", "is a source plugin, not a step"),
    "unknown-option": (("path: out/o.parquet", "path: out/o.parquet\n  compresion: zstd"),
                       "p.yaml:15", "did you mean 'compression'"),
    "wrong-type": (("where: \"x > 1\"", "where: [1, 2]"), "p.yaml:8", "where"),
    "bad-expression-syntax": (("x > 1", "x >"), "p.yaml:8", "syntax error"),
    "unknown-column": (("x > 1", "nope > 1"), "p.yaml:7", "nope"),
    "missing-env": (("in.csv", "${NOT_SET_ANYWHERE}"), "p.yaml:5", "NOT_SET_ANYWHERE"),
    "yaml-syntax": (("name: t", "name: [t"), "p.yaml", "invalid YAML"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_config_is_one_line_and_exit_2(write, case: str, command: str) -> None:
    """Each bad config prints one clear line naming file:line, exits 2, no traceback."""
    (old, new), where, needle = BAD_CONFIGS[case]
    write("in.csv", "x,name\n1,a\n")
    assert old in GOOD
    path = write("p.yaml", GOOD.replace(old, new, 1))
    result = run_cli(command, str(path))
    assert result.code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert where in lines[0]
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
    assert not (path.parent / "out").exists()


def test_validate_json_reports_errors_on_stdout(write) -> None:
    """validate --json: a machine-readable verdict on stdout, exit 2 when invalid."""
    path = write("p.yaml", GOOD.replace("use: parquet", "use: parquett"))
    result = run_cli("validate", str(path), "--json")
    assert result.code == 2
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is False and "parquett" in verdict["error"]


def test_missing_pipeline_file(tmp_path: Path) -> None:
    """A missing pipeline file: exit 2 with a hint."""
    result = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert "no such pipeline file" in result.stderr


def test_debug_shows_traceback(write) -> None:
    """--debug adds the traceback that is otherwise hidden."""
    path = write("p.yaml", GOOD.replace("use: parquet", "use: parquett"))
    result = run_cli("--debug", "validate", str(path))
    assert result.code == 2
    assert "Traceback" in result.stderr


def test_usage_error_exits_2() -> None:
    """An unknown command or option is a usage error."""
    assert run_cli("frobnicate").code == 2
    assert run_cli("run", "--no-such-flag", "x.yaml").code == 2


def test_version_lists_libraries() -> None:
    """--version names headrace, Python and the key libraries."""
    result = run_cli("--version")
    assert result.code == 0
    for name in ("headrace", "Python", "pyarrow", "duckdb"):
        assert name in result.stdout


def test_init_writes_a_runnable_example(tmp_path: Path) -> None:
    """init writes a pipeline that validates and runs; it refuses to overwrite."""
    result = run_cli("init", str(tmp_path / "ex"))
    assert result.code == 0, result.stderr
    run = run_cli("run", str(tmp_path / "ex" / "pipeline.yaml"), "--json")
    assert run.code == 0, run.stderr
    assert run.summary["records_out"] > 0
    assert_accounted(run.summary)
    again = run_cli("init", str(tmp_path / "ex"))
    assert again.code == 2
    assert "does not overwrite" in again.stderr


def test_schema_is_json_schema_with_every_plugin() -> None:
    """schema prints a JSON Schema naming each plugin's options."""
    result = run_cli("schema")
    assert result.code == 0
    schema = json.loads(result.stdout)
    step_uses = {s["properties"]["use"]["const"] for s in schema["properties"]["steps"]["items"]
                 ["anyOf"]}
    assert {"filter", "derive", "select", "rename", "cast", "python"} <= step_uses
    assert "where" in json.dumps(schema)


def test_plugins_list_and_show() -> None:
    """plugins list shows every built-in; plugins show renders options; unknown names hint."""
    listed = run_cli("plugins", "list", "--json")
    names = {(p["kind"], p["name"]) for p in json.loads(listed.stdout)}
    assert ("source", "csv") in names and ("sink", "parquet") in names
    shown = run_cli("plugins", "show", "filter")
    assert shown.code == 0 and "where" in shown.stdout
    missing = run_cli("plugins", "show", "filtr")
    assert missing.code == 2 and "did you mean 'filter'" in missing.stderr


def test_dry_run_shows_plan_without_output(pipeline: Path) -> None:
    """--dry-run validates and prints the plan; nothing is written."""
    result = run_cli("run", str(pipeline), "--dry-run", "--json")
    assert result.code == 0
    plan = json.loads(result.stdout)
    assert [s["id"] for s in plan["steps"]] == ["filter", "derive"]
    assert not (pipeline.parent / "out").exists()


def test_quiet_prints_nothing_on_success(pipeline: Path) -> None:
    """-q keeps stderr empty for a clean run."""
    result = run_cli("-q", "run", str(pipeline))
    assert result.code == 0
    assert result.stderr == ""


def test_set_override_from_cli(pipeline: Path) -> None:
    """--set changes an option for one run."""
    result = run_cli("run", str(pipeline), "--set", "steps.filter.where=x > 2", "--json")
    assert result.code == 0, result.stderr
    assert result.summary["records_out"] == 1


def test_dlq_show_counts_by_step_and_error(write, tmp_path: Path) -> None:
    """dlq show groups dead letters by step and error, with samples; junk lines are counted."""
    write("in.csv", "id,amount\n1,10\n2,x\n3,30,extra\n4,y\n")
    path = write("p.yaml", """
        version: 1
        name: dlq
        source: {use: csv, path: in.csv, types: {amount: int64}}
        sink: {use: jsonl, path: out/o.jsonl}
        """)
    assert run_cli("run", str(path)).code == 1
    dead = tmp_path / "out" / "o.dead.jsonl"
    with dead.open("a") as handle:
        handle.write("not json\n")
    shown = run_cli("dlq", "show", str(dead), "--json")
    assert shown.code == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["total"] == 3 and summary["unreadable"] == 1
    counts = {(g["step"], g["error"]): g["count"] for g in summary["groups"]}
    assert counts == {("csv", "ConversionError"): 2, ("csv", "RaggedRow"): 1}
    lines = sorted(s["position"]["line"] for g in summary["groups"] for s in g["samples"])
    assert lines == [3, 4, 5]
    text = run_cli("dlq", "show", str(dead))
    assert "3 dead letters" in text.stdout and "RaggedRow" in text.stdout
    missing = run_cli("dlq", "show", str(tmp_path / "nope.jsonl"))
    assert missing.code == 2 and "no such dead-letter file" in missing.stderr


# The global options (--debug, -v, -q, --log-format) after the command, as before it.
ESC_SOURCE = "x,a\x1b[2Kfake\n1,2\n"
ESC_PIPELINE = """
version: 1
name: esc
source: {use: csv, path: in.csv}
steps:
  - use: select
    columns: ["a\\e[2Kfake"]
sink: {use: jsonl, path: out.jsonl}
"""


def test_every_command_accepts_the_global_options() -> None:
    """Each command and sub-group, nested ones included, takes the four global options."""
    import typer

    from headrace.cli import app

    def walk(command, path):  # type: ignore[no-untyped-def]
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    commands = list(walk(typer.main.get_command(app), ()))
    paths = {" ".join(path) for path, _ in commands}
    assert {"run", "resume", "validate", "dlq show", "dlq replay", "config show", "infer",
            "plugins list", "plugins show", "schema", "init"} <= paths
    for path, command in commands:
        opts = {opt for param in command.params for opt in param.opts}
        assert {"--debug", "-v", "--verbose", "-q", "--quiet", "--log-format"} <= opts, path


@pytest.mark.parametrize("command", ["validate", "run", "config show"])
def test_debug_after_the_command_shows_traceback(write, command: str) -> None:
    """--debug after the command adds the traceback, as it does before the command."""
    path = write("p.yaml", GOOD.replace("use: parquet", "use: parquett"))
    plain = run_cli(*command.split(), str(path))
    assert plain.code == 2 and "Traceback" not in plain.stderr
    result = run_cli(*command.split(), str(path), "--debug")
    assert result.code == 2
    assert "Traceback" in result.stderr
    assert "unknown sink plugin 'parquett'" in result.stderr.splitlines()[-1]


def test_quiet_after_the_command_silences_progress_and_summary(pipeline: Path) -> None:
    """-q after the command: no periodic progress lines, no summary; -q wins over -v."""
    fast = ("--set", "runtime.progress_interval=0.001")
    loud = run_cli("run", str(pipeline), *fast)
    assert loud.code == 0, loud.stderr
    assert "records read" in loud.stderr and "ok: 3 in, 2 out" in loud.stderr
    for args in (("run", str(pipeline), *fast, "-q"),
                 ("run", "-q", str(pipeline), *fast),
                 ("-v", "run", str(pipeline), *fast, "--quiet")):
        result = run_cli(*args)
        assert result.code == 0, args
        assert result.stderr == "", args
    assert (pipeline.parent / "out" / "o.parquet").exists()


@pytest.mark.parametrize("args", [
    ("run", "{path}", "-v", "--log-format", "json"),
    ("-v", "run", "{path}", "--log-format", "json"),
    ("--log-format", "text", "run", "{path}", "--log-format", "json", "-v"),
], ids=["after", "mixed", "after-wins"])
def test_log_format_after_the_command_gives_json_lines(write, args: tuple[str, ...]) -> None:
    """--log-format json after the command (with -v before or after) logs JSON lines."""
    write("in.csv", ESC_SOURCE)
    path = write("p.yaml", ESC_PIPELINE)
    result = run_cli(*(a.format(path=path) for a in args))
    assert result.code == 0, result.stderr
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    engine = [entry for entry in logs if entry["logger"] == "headrace.engine"]
    assert engine, result.stderr
    assert engine[0]["level"] == "INFO"
    assert engine[0]["message"].endswith("a\x1b[2Kfake")
    assert "headrace INFO" not in result.stderr


def test_verbose_after_the_command_gives_text_logs(write) -> None:
    """-v after the command turns on INFO logs in the default text format."""
    write("in.csv", ESC_SOURCE)
    path = write("p.yaml", ESC_PIPELINE)
    quiet = run_cli("run", str(path))
    assert "headrace INFO" not in quiet.stderr
    result = run_cli("run", str(path), "-v")
    assert result.code == 0, result.stderr
    assert ("headrace INFO headrace.engine: reading only the columns the pipeline uses: "
            "a\\x1b[2Kfake") in result.stderr.splitlines()


def test_global_options_after_the_command_add_up(capsys) -> None:  # type: ignore[no-untyped-def]
    """-v before and -v after the command is -vv (DEBUG); a later --log-format wins."""
    import logging

    from headrace.cli import main
    from headrace.cli._app import State

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        assert main(["-v", "--log-format", "json", "schema", "-v", "--log-format", "text"]) == 0
        assert (State.verbosity, root.level, State.log_format) == (2, logging.DEBUG, "text")
        assert main(["schema", "--debug", "-q", "-v"]) == 0
        assert (State.debug, State.verbosity, root.level) == (True, -1, logging.ERROR)
        assert main(["schema"]) == 0  # nothing carried over from the last command line
        assert (State.debug, State.verbosity, root.level) == (False, 0, logging.WARNING)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    assert json.loads(capsys.readouterr().out.split("\n}\n")[0] + "}")["type"] == "object"


def test_unknown_log_format_after_the_command_is_a_usage_error(pipeline: Path) -> None:
    """--log-format xml after the command is refused with exit 2, as before it."""
    result = run_cli("run", str(pipeline), "--log-format", "xml")
    assert result.code == 2
    assert "--log-format" in result.stderr
    assert not (pipeline.parent / "out").exists()
