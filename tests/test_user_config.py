"""Layers under and over the pipeline file: the user config file, HEADRACE_<PLUGIN>__<OPTION>
variables, --set; their precedence, the origins `config show` reports, and their errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from headrace.config import disabled_plugins, load_pipeline, load_user_config
from headrace.config._user import user_config_path
from headrace.errors import ConfigError, ConfigFileError

from .conftest import run_cli

# A jsonl source, so that HEADRACE_CSV__* variables reach the csv sink only.
PIPELINE = """
version: 1
name: layers
source:
  use: jsonl
  path: in.jsonl
sink:
  use: csv
  path: out.csv
"""
PIPELINE_DELIMITER_LINE = 9  # "  delimiter: '|'" appended (the first newline is dropped)


@pytest.fixture
def folder(write) -> Path:  # type: ignore[no-untyped-def]
    write("in.jsonl", '{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
    write("config.toml", "")
    return write("p.yaml", PIPELINE).parent  # type: ignore[no-any-return]


def env_for(folder: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment whose user config is ``folder/config.toml``."""
    return {"HEADRACE_CONFIG": str(folder / "config.toml"), **extra}


def show(folder: Path, *args: str, env: dict[str, str]) -> dict[str, Any]:
    result = run_cli("config", "show", str(folder / "p.yaml"), "--json", *args, env=env)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


LAYERS = ("user", "pipeline", "env", "set")
CASES = {
    "default": ((), ",", "default"),
    "user-config-alone": (("user",), ";", "user config {config}:2"),
    "pipeline-alone": (("pipeline",), "|", f"p.yaml:{PIPELINE_DELIMITER_LINE}"),
    "env-alone": (("env",), ":", "env HEADRACE_CSV__DELIMITER"),
    "set-alone": (("set",), "/", "--set"),
    "pipeline-over-user": (("user", "pipeline"), "|", f"p.yaml:{PIPELINE_DELIMITER_LINE}"),
    "env-over-pipeline": (("user", "pipeline", "env"), ":", "env HEADRACE_CSV__DELIMITER"),
    "set-over-env": (LAYERS, "/", "--set"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_precedence_of_one_option(folder: Path, write, case: str) -> None:  # type: ignore[no-untyped-def]
    """The csv sink's delimiter comes from the highest layer that gives it, in the output
    file of a real run and in `config show --json`."""
    layers, delimiter, origin = CASES[case]
    if "user" in layers:
        write("config.toml", '[plugins.csv]\ndelimiter = ";"\n')
    if "pipeline" in layers:
        write("p.yaml", PIPELINE + "  delimiter: '|'\n")
    env = env_for(folder, **({"HEADRACE_CSV__DELIMITER": ":"} if "env" in layers else {}))
    args = ("--set", "sink.delimiter=/") if "set" in layers else ()

    result = run_cli("run", str(folder / "p.yaml"), *args, env=env)
    assert result.code == 0, result.stderr
    header = (folder / "out.csv").read_text().splitlines()[0]
    assert header == f'"a"{delimiter}"b"'

    row = show(folder, *args, env=env)["sink"]["options"]["delimiter"]
    expected = origin.format(config=folder / "config.toml")
    assert row["value"] == delimiter
    assert row["origin"].removeprefix(str(folder) + "/") == expected


def test_show_names_every_section_and_defaults(folder: Path) -> None:
    """config show lists source, sink, dead_letter and runtime, defaults included."""
    document = show(folder, env=env_for(folder))
    assert document["source"]["options"]["path"]["value"] == "in.jsonl"
    assert document["source"]["options"]["block_size"]["origin"] == "default"
    assert document["runtime"]["channel_size"] == {"value": 2, "origin": "default"}
    assert document["dead_letter"]["path"]["origin"] == "default"
    text = run_cli("config", "show", str(folder / "p.yaml"), env=env_for(folder))
    assert text.code == 0, text.stderr
    assert "sink csv (use: csv)" in text.stdout
    assert "env HEADRACE" not in text.stdout


def test_xdg_config_home_is_read(folder: Path, tmp_path: Path) -> None:
    """Without HEADRACE_CONFIG, $XDG_CONFIG_HOME/headrace/config.toml is the user config."""
    xdg = tmp_path / "xdg"
    (xdg / "headrace").mkdir(parents=True)
    (xdg / "headrace" / "config.toml").write_text('[plugins.csv]\ndelimiter = ";"\n')
    env = {"HEADRACE_CONFIG": "", "XDG_CONFIG_HOME": str(xdg)}
    row = show(folder, env=env)["sink"]["options"]["delimiter"]
    assert row == {"value": ";", "origin": f"user config {xdg}/headrace/config.toml:2"}


def test_env_for_an_unused_plugin_is_ignored(folder: Path) -> None:
    """HEADRACE_<PLUGIN>__... of a plugin this pipeline does not use changes nothing."""
    env = env_for(folder, HEADRACE_PARQUET__NO_SUCH_OPTION="1", HEADRACE_LOG_FORMAT="text")
    assert run_cli("validate", str(folder / "p.yaml"), env=env).code == 0


def test_bad_toml_in_user_config(folder: Path, write) -> None:  # type: ignore[no-untyped-def]
    """Invalid TOML in the user config: exit 2, one line naming the file and line."""
    write("config.toml", "[plugins.csv]\ndelimiter = \n")
    result = run_cli("run", str(folder / "p.yaml"), env=env_for(folder))
    assert result.code == 2
    line = one_error_line(result.stderr)
    assert f"{folder / 'config.toml'}:2" in line
    assert "invalid TOML" in line


def test_unknown_option_from_env_names_the_variable(folder: Path) -> None:
    """An env option the plugin lacks is the unknown-key error, naming the variable."""
    env = env_for(folder, HEADRACE_CSV__DELIMTER=";")
    result = run_cli("run", str(folder / "p.yaml"), env=env)
    assert result.code == 2
    line = one_error_line(result.stderr)
    assert "env HEADRACE_CSV__DELIMTER" in line
    assert "did you mean 'delimiter'" in line
    assert "p.yaml" not in line


def test_bad_value_from_user_config_names_its_line(folder: Path, write) -> None:  # type: ignore[no-untyped-def]
    """A wrong value in the user config is an error at that file's line, not the pipeline's."""
    write("config.toml", '# defaults\n[plugins.csv]\nheader = true\ndelimiter = ";;"\n')
    result = run_cli("validate", str(folder / "p.yaml"), env=env_for(folder))
    assert result.code == 2
    line = one_error_line(result.stderr)
    assert f"user config {folder / 'config.toml'}:4" in line
    assert "delimiter" in line


@pytest.mark.parametrize(
    ("text", "needle"),
    [('[plugins]\ndisable = "scrapy"\n', ":2: plugins.disable must be a list"),
     ("[plugin.csv]\nheader = true\n", ":1: unknown table 'plugin'"),
     ('[plugins]\ncsv = 3\n', ":2: plugins.csv must be a table"),
     ('[plugins.csv]\nid = "mine"\n', ":2: plugins.csv.id: 'id' can only be set")],
    ids=["disable-not-a-list", "unknown-table", "plugin-not-a-table", "reserved-key"],
)
def test_wrong_shapes_in_user_config(folder: Path, write, text: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    """Wrong shapes in the user config are one-line config errors naming file:line."""
    write("config.toml", text)
    result = run_cli("validate", str(folder / "p.yaml"), env=env_for(folder))
    assert result.code == 2
    assert f"{folder / 'config.toml'}{needle}" in one_error_line(result.stderr)


SECRET = "Bearer tok-0123456789abc"


def test_secret_from_user_config_is_redacted(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A value under a secret-looking key of the user config never shows: not in config show,
    not in an error message that happens to contain it."""
    write("in.jsonl", '{"a": 1}\n')
    write("p.yaml", """
        version: 1
        name: secret
        source: {use: jsonl, path: in.jsonl}
        sink: {use: http, url: "http://127.0.0.1:9/in"}
        """)
    write("config.toml", f'[plugins.http]\nheaders = {{ Authorization = "{SECRET}" }}\n')
    env = env_for(tmp_path)
    result = run_cli("config", "show", str(tmp_path / "p.yaml"), "--json", env=env)
    assert result.code == 0, result.stderr
    assert SECRET not in result.stdout and "tok-0123" not in result.stdout
    headers = json.loads(result.stdout)["sink"]["options"]["headers"]
    assert headers["value"] == {"Authorization": "***"}
    text = run_cli("config", "show", str(tmp_path / "p.yaml"), env=env)
    assert text.code == 0 and "tok-0123" not in text.stdout

    write("config.toml", f'[plugins.http]\nheaders = {{ Authorization = "{SECRET}" }}\n'
          f'[plugins.jsonl]\ncompression = "{SECRET}"\n')
    failed = run_cli("validate", str(tmp_path / "p.yaml"), env=env)
    assert failed.code == 2
    line = one_error_line(failed.stderr)
    assert "compression" in line and "***" in line and "tok-0123" not in line


def test_disabled_plugins_from_env_and_user_config(tmp_path: Path) -> None:
    """HEADRACE_DISABLE_PLUGINS is split at commas, trimmed, and joined with plugins.disable."""
    config = tmp_path / "config.toml"
    config.write_text('[plugins]\ndisable = ["scrapy", " spaced "]\n')
    environ = {"HEADRACE_CONFIG": str(config), "HEADRACE_DISABLE_PLUGINS": " a, dist:b ,,c,"}
    assert disabled_plugins(environ) == {"a", "dist:b", "c", "scrapy", "spaced"}
    assert disabled_plugins({}) == frozenset()
    assert disabled_plugins({"HEADRACE_DISABLE_PLUGINS": " , "}) == frozenset()


def test_user_config_location(tmp_path: Path) -> None:
    """$HEADRACE_CONFIG, else $XDG_CONFIG_HOME/headrace, else ~/.config/headrace; an explicit
    file must exist, a default one may be missing."""
    assert user_config_path({"HEADRACE_CONFIG": "x.toml", "XDG_CONFIG_HOME": "/c"}) == (
        Path("x.toml"), True)
    assert user_config_path({"XDG_CONFIG_HOME": "/c"})[0] == Path("/c/headrace/config.toml")
    assert user_config_path({"HOME": "/h"})[0] == Path("/h/.config/headrace/config.toml")
    assert user_config_path({}) == (None, False)
    assert load_user_config({"XDG_CONFIG_HOME": str(tmp_path)}).path is None
    with pytest.raises(ConfigFileError, match="no such file"):
        load_user_config({"HEADRACE_CONFIG": str(tmp_path / "missing.toml")})


def test_layers_in_load_pipeline(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Nested env keys, policy defaults from the user config (unless the pipeline's runtime
    sets them), and --set winning over an env variable for the same key."""
    write("p.yaml", """
        version: 1
        name: t
        source: {use: jsonl, path: in.jsonl}
        steps:
          - use: filter
            where: "a > 1"
        sink: {use: csv, path: out.csv}
        runtime: {retry: 2}
        """)
    config = write("config.toml", "[plugins.filter]\ntimeout = '5s'\nretry = 4\n"
                   "[plugins.csv]\nheader = false\n")
    environ = {"HEADRACE_CONFIG": str(config), "HEADRACE_FILTER__RATE_LIMIT__RATE": "50",
               "HEADRACE_CSV__DELIMITER": ";", "HEADRACE_CSV__HEADER": "true"}
    loaded = load_pipeline(tmp_path / "p.yaml", ["sink.delimiter=/"], environ=environ)
    step = loaded.config.steps[0]
    assert step.timeout == 5.0
    assert "retry" not in step.model_fields_set  # runtime.retry of the pipeline wins
    assert step.rate_limit is not None and step.rate_limit.rate == 50
    assert loaded.config.sink.options == {"path": "out.csv", "delimiter": "/", "header": True}
    assert loaded.origin_of(("sink", "delimiter")) == "--set"
    assert loaded.origin_of(("sink", "header")) == "env HEADRACE_CSV__HEADER"
    assert loaded.origin_of(("steps", 0, "timeout")) == f"user config {config}:2"
    assert loaded.origin_of(("steps", 0, "rate_limit", "rate")) == (
        "env HEADRACE_FILTER__RATE_LIMIT__RATE")

    environ["HEADRACE_FILTER__RATE_LIMIT__RATE"] = "fast"
    with pytest.raises(ConfigError, match="env HEADRACE_FILTER__RATE_LIMIT__RATE"):
        load_pipeline(tmp_path / "p.yaml", environ=environ)


def test_list_and_mapping_values_from_env_and_set(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """YAML flow lists and mappings (``[a, b]``, ``{x: y}``) set list and dict options."""
    write("p.yaml", """
        version: 1
        name: t
        source: {use: jsonl, path: in.jsonl}
        steps:
          - use: select
            columns: [a]
          - use: rename
            columns: {a: b}
        sink: {use: csv, path: out.csv}
        """)
    environ = {"HEADRACE_CONFIG": "", "HEADRACE_SELECT__COLUMNS": "[a, c]"}
    loaded = load_pipeline(tmp_path / "p.yaml", ["steps.1.columns={a: z}"], environ=environ)
    assert loaded.config.steps[0].options == {"columns": ["a", "c"]}
    assert loaded.config.steps[1].options == {"columns": {"a": "z"}}
