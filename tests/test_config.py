"""Pipeline files: YAML and TOML, interpolation, overrides, and every error names file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.config import load_pipeline
from headrace.errors import ConfigError, ConfigFileError, ConfigValueError

YAML = """
version: 1
name: flights
source:
  use: csv
  path: ${INPUT:-data.csv}
steps:
  - use: filter
    where: "dep_delay > 60"
  - use: select
    id: pick
    columns: [a, b]
sink:
  use: parquet
  path: out/x.parquet
"""

TOML = """
version = 1
name = "flights"

[source]
use = "csv"
path = "${INPUT:-data.csv}"

[[steps]]
use = "filter"
where = "dep_delay > 60"

[[steps]]
use = "select"
id = "pick"
columns = ["a", "b"]

[sink]
use = "parquet"
path = "out/x.parquet"
"""


def test_yaml_and_toml_load_to_the_same_model(write) -> None:
    """The same pipeline written in YAML and in TOML gives equal configs."""
    from_yaml = load_pipeline(write("p.yaml", YAML), environ={}).config
    from_toml = load_pipeline(write("p.toml", TOML), environ={}).config
    assert from_yaml == from_toml
    assert from_yaml.steps[0].options == {"where": "dep_delay > 60"}
    assert from_yaml.steps[1].id == "pick"


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${INPUT}", {"INPUT": "a.csv"}, "a.csv"),
        ("${INPUT:-b.csv}", {}, "b.csv"),
        ("${INPUT:-b.csv}", {"INPUT": ""}, "b.csv"),
        ("x/${INPUT}/y", {"INPUT": "z"}, "x/z/y"),
        ("$${INPUT}", {"INPUT": "z"}, "${INPUT}"),
    ],
    ids=["set", "default", "empty-uses-default", "embedded", "escaped"],
)
def test_interpolation(write, value: str, environ: dict[str, str], expected: str) -> None:
    """${VAR}, ${VAR:-default} and $$ behave like a shell's."""
    text = YAML.replace("${INPUT:-data.csv}", f"'{value}'")
    config = load_pipeline(write("p.yaml", text), environ=environ).config
    assert config.source.options["path"] == expected


def test_missing_variable_names_it_and_the_line(write) -> None:
    """An unset ${VAR} is an error naming the variable, file and line, never a value."""
    text = YAML.replace("${INPUT:-data.csv}", "${SECRET_INPUT}")
    with pytest.raises(ConfigValueError) as info:
        load_pipeline(write("p.yaml", text), environ={})
    assert "SECRET_INPUT" in info.value.message
    assert "p.yaml:5" in info.value.message


def test_required_variable_message(write) -> None:
    """${VAR:?message} fails with the author's message."""
    text = YAML.replace("${INPUT:-data.csv}", "'${INPUT:?set INPUT to the flights file}'")
    with pytest.raises(ConfigValueError, match="set INPUT to the flights file"):
        load_pipeline(write("p.yaml", text), environ={})


def test_set_overrides_by_path_and_step_id(write) -> None:
    """--set reaches nested keys, list indexes and steps by id, with YAML scalar typing."""
    loaded = load_pipeline(
        write("p.yaml", YAML),
        ["source.path=other.csv", "steps.0.where=x > 1", "steps.pick.columns=[a]",
         "runtime.channel_size=4"],
        environ={},
    )
    config = loaded.config
    assert config.source.options["path"] == "other.csv"
    assert config.steps[0].options["where"] == "x > 1"
    assert config.runtime.channel_size == 4


@pytest.mark.parametrize(
    ("mutation", "line", "needle"),
    [
        (("  use: parquet\n", "  use: parquet\n  compresion: zstd\n"), None, None),
        (("name: flights\n", "name: flights\nsteps_: []\n"), 3, "unknown key 'steps_'"),
        (("version: 1\n", "version: 2\n"), 1, "version"),
        (("  - use: filter\n", "  - use: filter\n    concurrency: many\n"), 8, "concurrency"),
        (("  - use: filter\n", "  - use: filter\n    timeout: 0\n"), 8, "timeout"),
        (("  - use: filter\n", "  - use: filter\n    retry: {attempts: -1}\n"), 8, "attempts"),
        (("  - use: filter\n", "  - use: filter\n    rate_limit: fast\n"), 8, "not a rate"),
        (("name: flights\n", "name: flights\nruntime:\n  chanel_size: 3\n"), 4,
         "did you mean 'channel_size'"),
    ],
    ids=["plugin-option-later", "unknown-top-key", "bad-version", "wrong-type",
         "timeout-zero", "retry-negative", "bad-rate", "runtime-typo"],
)
def test_config_errors_name_file_and_line(write, mutation, line, needle) -> None:
    """Unknown keys and wrong types are one-line errors with file:line and a hint."""
    text = YAML.replace(*mutation)
    path = write("p.yaml", text)
    if line is None:  # plugin options are checked when plugins load (see test_cli)
        load_pipeline(path, environ={})
        return
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, environ={})
    assert f"p.yaml:{line}" in info.value.one_line()
    assert needle in info.value.one_line()
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version: 1\nname: [unclosed\n", "invalid YAML"),
        ("a: &x [1]\nb: *x\n", "aliases"),
        ("x: !!python/object/apply:os.system ['echo hi']\n", "tag"),
        ("", "empty"),
        ("- 1\n- 2\n", "mapping"),
        ("version: 1\nversion: 1\n", "duplicate"),
    ],
    ids=["syntax", "alias", "python-tag", "empty", "not-a-mapping", "duplicate-key"],
)
def test_hostile_or_broken_yaml_is_refused(write, text: str, needle: str) -> None:
    """Syntax errors, aliases, tags and duplicates are config errors, never executed."""
    with pytest.raises(ConfigFileError, match=needle):
        load_pipeline(write("p.yaml", text), environ={})


def test_toml_syntax_error_and_missing_file(tmp_path: Path, write) -> None:
    """A TOML syntax error and a missing file are ConfigFileErrors."""
    with pytest.raises(ConfigFileError, match="invalid TOML"):
        load_pipeline(write("p.toml", "version = \n"), environ={})
    with pytest.raises(ConfigFileError, match="no such pipeline file"):
        load_pipeline(tmp_path / "missing.yaml", environ={})


def test_toml_errors_name_the_line(write) -> None:
    """TOML keeps no positions, so headrace finds the line of a bad key itself."""
    text = TOML.replace('[sink]\nuse = "parquet"', '[sink]\nuse = "parquet"\nid = "bad id!"')
    with pytest.raises(ConfigValueError) as info:
        load_pipeline(write("p.toml", text), environ={})
    assert "p.toml:19" in info.value.message
