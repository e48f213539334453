"""Fuzzed pipeline files: only headrace's own errors ever escape, never a traceback type."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.config import load_pipeline
from headrace.engine import build_plan, check_schemas
from headrace.errors import HeadraceError

KEYS = ["version", "name", "source", "steps", "sink", "use", "path", "where", "columns",
        "concurrency", "executor", "on_error", "id", "runtime", "dead_letter", "channel_size",
        "max_failures", "function", "mode", "types", "retry", "block_size", "x"]
PLUGINS = ["csv", "jsonl", "parquet", "filter", "derive", "select", "rename", "cast", "python",
           "stdout", "nope", "json:dumps", "os:system"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True),
    st.sampled_from(PLUGINS), st.text(max_size=12),
    st.sampled_from(["${NOPE}", "${X:-1}", "a > 1", "x >", "1e9", "-1", "50%", "in.csv"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
pipelines = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, "1"]), "name": st.sampled_from(["p", "", "a b"])},
    optional={
        "source": st.dictionaries(st.sampled_from(KEYS), values, max_size=4).map(
            lambda d: {"use": "csv", "path": "in.csv", **d}),
        "steps": st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=4), max_size=3),
        "sink": st.dictionaries(st.sampled_from(KEYS), values, max_size=3),
        "runtime": values,
        "dead_letter": values,
    },
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=pipelines, fmt=st.sampled_from(["json-as-yaml", "yaml-text"]))
def test_fuzzed_configs_raise_only_headrace_errors(tmp_path: Path, data, fmt) -> None:  # type: ignore[no-untyped-def]
    """Whatever the file says, loading and planning either work or raise a HeadraceError."""
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    path = tmp_path / "p.yaml"
    # JSON is valid YAML; the text form mangles it further with YAML-specific syntax.
    text = json.dumps(data, default=str)
    if fmt == "yaml-text":
        text = text.replace("{", "{ ").replace(", ", "\n  ").replace("[", "[ ")
    path.write_text(text)
    try:
        loaded = load_pipeline(path, environ={})
        check_schemas(build_plan(loaded))
    except HeadraceError as exc:
        assert "\n" not in exc.one_line()
