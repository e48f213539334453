"""Discovery through real installed distributions (dist-info folders with entry points on
``PYTHONPATH``): name conflicts, broken imports, bad option models, disabled plugins — each a
clear one-line error naming the plugin and its distribution, while other plugins keep working."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_cli

STEP = """\
import pyarrow as pa
from headrace.plugin import Options, Step, StepOutput

class GeoOptions(Options):
    label: str = "{label}"

class Geocode(Step):
    summary = "geocode from {dist}"
    Options = GeoOptions

    def process(self, batch):
        table = batch.to_arrow()
        column = pa.array([self.options.label] * table.num_rows, pa.string())
        return StepOutput(batch.derive(table=table.append_column("geo", column),
                                       row_ids=batch.row_ids))
"""
DISTS = {
    "headrace-geo-a": ("1.0", "geo_a", "[headrace.steps]\ngeocode = geo_a:Geocode\n",
                       STEP.format(label="from-a", dist="a")),
    "headrace-geo-b": ("2.0", "geo_b", "[headrace.steps]\ngeocode = geo_b:Geocode\n",
                       STEP.format(label="from-b", dist="b")),
    "headrace-broken": ("0.1", "broken_plugin",
                        "[headrace.steps]\nbroken = broken_plugin:Broken\n"
                        "[headrace.sinks]\nbadopts = bad_options:BadSink\n",
                        "raise RuntimeError('this plugin cannot import')\n"),
}
BAD_OPTIONS = """\
from headrace.plugin import Sink

class BadSink(Sink):
    summary = "options are a dict, not a model"
    Options = dict

    async def write(self, batch):
        return None
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding three installed distributions, as pip would leave them."""
    root = tmp_path / "site"
    root.mkdir()
    for dist, (version, module, entry_points, code) in DISTS.items():
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(entry_points)
        (root / f"{module}.py").write_text(code)
    (root / "bad_options.py").write_text(BAD_OPTIONS)
    return root


def _env(site: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "HEADRACE_CONFIG": "", **extra}


PIPELINE = textwrap.dedent("""\
    version: 1
    name: registry
    source:
      use: csv
      path: in.csv
    steps:
      - use: STEP
    sink:
      use: jsonl
      path: out/o.jsonl
    """)


def _pipeline(tmp_path: Path, step_use: str) -> Path:
    (tmp_path / "in.csv").write_text("x\n1\n2\n")
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.replace("STEP", step_use))
    return path


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_list_marks_conflicts_and_broken_plugins(site: Path, tmp_path: Path) -> None:
    """plugins list still works: conflicting names are marked, a broken plugin says why,
    built-ins are listed with their summaries."""
    result = run_cli("plugins", "list", env=_env(site, tmp_path))
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    geocode = [line for line in lines if " geocode " in line]
    assert len(geocode) == 2 and all("[name conflict]" in line for line in geocode)
    assert any("headrace-geo-a 1.0" in line for line in geocode)
    broken = next(line for line in lines if " broken " in line)
    assert "BROKEN" in broken and "cannot import" in broken
    assert any(line.startswith("source  csv") and "CSV file" in line for line in lines)
    listed = json.loads(run_cli("plugins", "list", "--json", env=_env(site, tmp_path)).stdout)
    a = next(p for p in listed if p["distribution"] == "headrace-geo-a")
    assert a["conflicts"] == ["headrace-geo-b 2.0 (geo_b:Geocode)"]


def test_two_plugins_with_one_name(site: Path, tmp_path: Path) -> None:
    """Using the contested name: exit 2, one line naming both packages, with the two ways
    out; disabling one by ``dist:name`` or naming the class by import path resolves it."""
    pipeline = _pipeline(tmp_path, "geocode")
    result = run_cli("run", str(pipeline), env=_env(site, tmp_path))
    assert result.code == 2
    line = _one_error_line(result.stderr)
    assert "p.yaml:7" in line and "more than one package" in line
    assert "headrace-geo-a 1.0 (geo_a:Geocode)" in line and "headrace-geo-b 2.0" in line
    assert "HEADRACE_DISABLE_PLUGINS=headrace-geo-b:geocode" in line
    env = _env(site, tmp_path, HEADRACE_DISABLE_PLUGINS="headrace-geo-b:geocode")
    ok = run_cli("run", str(pipeline), env=env)
    assert ok.code == 0, ok.stderr
    assert '"geo":"from-a"' in (tmp_path / "out/o.jsonl").read_text().replace(" ", "")
    by_path = run_cli("run", str(_pipeline(tmp_path, "geo_b:Geocode")),
                      env=_env(site, tmp_path))
    assert by_path.code == 0, by_path.stderr
    assert '"geo":"from-b"' in (tmp_path / "out/o.jsonl").read_text().replace(" ", "")


def test_broken_plugin_is_named_and_others_keep_working(site: Path, tmp_path: Path) -> None:
    env = _env(site, tmp_path)
    result = run_cli("validate", str(_pipeline(tmp_path, "broken")), env=env)
    assert result.code == 2
    line = _one_error_line(result.stderr)
    assert "step plugin 'broken' from headrace-broken 0.1 failed to import" in line
    assert "RuntimeError: this plugin cannot import" in line
    fine = run_cli("run", str(_pipeline(tmp_path, "filter\n    where: x > 1")), env=env)
    assert fine.code == 0, fine.stderr


def test_bad_options_model(site: Path, tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, "filter\n    where: x > 1").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(pipeline.replace("use: jsonl", "use: badopts"))
    result = run_cli("validate", str(path), env=_env(site, tmp_path))
    assert result.code == 2
    line = _one_error_line(result.stderr)
    assert "sink plugin 'badopts' (headrace-broken 0.1) declares a bad options model" in line


def test_disabled_by_environment_and_user_config(site: Path, tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, "filter\n    where: x > 1")
    result = run_cli("validate", str(pipeline),
                     env=_env(site, tmp_path, HEADRACE_DISABLE_PLUGINS="select, filter"))
    assert result.code == 2
    assert "step plugin 'filter' is disabled" in _one_error_line(result.stderr)
    config = tmp_path / "config.toml"
    config.write_text('[plugins]\ndisable = ["filter"]\n')
    by_file = run_cli("validate", str(pipeline),
                      env=_env(site, tmp_path, HEADRACE_CONFIG=str(config)))
    assert by_file.code == 2 and "is disabled" in by_file.stderr
    listed = run_cli("plugins", "list", "--kind", "step",
                     env=_env(site, tmp_path, HEADRACE_CONFIG=str(config)))
    assert any(" filter " in line and "[disabled]" in line
               for line in listed.stdout.splitlines())


def test_wrong_kind_and_unknown_name_hints(site: Path, tmp_path: Path) -> None:
    env = _env(site, tmp_path)
    wrong = run_cli("validate", str(_pipeline(tmp_path, "badopts")), env=env)
    assert "'badopts' is a sink plugin, not a step" in _one_error_line(wrong.stderr)
    unknown = run_cli("validate", str(_pipeline(tmp_path, "geocod")), env=env)
    line = _one_error_line(unknown.stderr)
    assert "unknown step plugin 'geocod'" in line and "did you mean 'geocode'" in line


def test_plugins_show_capabilities_and_example() -> None:
    shown = run_cli("plugins", "show", "jsonl", "--kind", "sink")
    assert shown.code == 0, shown.stderr
    assert "capabilities: idempotent, atomic, thread_safe" in shown.stdout
    assert "example:\n    use: jsonl\n    path: \"out/records.jsonl\"" in shown.stdout
    required = run_cli("plugins", "show", "http", "--kind", "step")
    assert "example (required options):\n    use: http\n    url: <str>" in required.stdout


def test_plugins_check_from_the_cli(site: Path, tmp_path: Path) -> None:
    """``plugins check``: a built-in with its example passes (exit 0); a plugin whose
    options carry no descriptions fails the class check (exit 1); an unknown name exits 2."""
    env = _env(site, tmp_path)
    ok = run_cli("plugins", "check", "filter", "--json", env=env)
    assert ok.code == 0, ok.stdout + ok.stderr
    results = {r["name"]: r["status"] for r in json.loads(ok.stdout)}
    assert results == {"class": "passed", "lifecycle": "passed", "step": "passed",
                       "thread-safe": "passed"}
    sink = run_cli("plugins", "check", "jsonl", "--kind", "sink", "--set", "path=out/x.jsonl",
                   cwd=tmp_path, env=env)
    assert sink.code == 0 and "0 failed" in sink.stdout, sink.stdout
    failing = run_cli("plugins", "check", "geocode", "--set", "label=x", env=_env(
        site, tmp_path, HEADRACE_DISABLE_PLUGINS="headrace-geo-b:geocode"))
    assert failing.code == 1, failing.stdout + failing.stderr
    assert "FAILED  class" in failing.stdout and "label" in failing.stdout
    regrouping = run_cli("plugins", "check", "aggregate", env=env)  # counted with its flush
    assert regrouping.code == 0 and "0 failed" in regrouping.stdout, regrouping.stdout
    unknown = run_cli("plugins", "check", "filtr", env=env)
    assert unknown.code == 2 and "did you mean 'filter'" in unknown.stderr
