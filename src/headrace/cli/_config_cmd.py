"""``headrace config show``: every option of a pipeline after layering, and where it came from.

Imported when the CLI starts: only typer and the standard library at the top.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

config_app = typer.Typer(
    help="The configuration a pipeline runs with: pipeline file, user config, environment.",
    no_args_is_help=True,
)
DEFAULT = "default"
MASK = "***"
_STEP_KEYS = ("concurrency", "executor", "on_error")
_POLICY_KEYS = ("timeout", "retry", "breaker", "rate_limit")

Row = dict[str, Any]


@config_app.command("show")
def show(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline file (YAML or TOML).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key.path=value.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON document on stdout.")] = False,
) -> None:
    """Print every option of every section with its value and origin (--set, env NAME,
    the pipeline file's line, user config FILE:LINE, or default); secrets are hidden."""
    from headrace.config import load_pipeline, redact_data
    from headrace.engine import build_plan

    plan = build_plan(load_pipeline(pipeline, list(set_ or [])))
    document = redact_data(describe(plan))
    if as_json:
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        typer.echo(render(document, str(pipeline)))


def describe(plan: Any) -> dict[str, Any]:
    """The merged configuration of ``plan`` as JSON-ready data, secrets masked by key name."""
    loaded = plan.pipeline
    config = loaded.config
    steps = []
    for index, planned in enumerate(plan.steps):
        section = _plugin_section(loaded, planned.step, planned.spec, ("steps", index))
        section["id"] = planned.id
        steps.append(section)
    return {
        "pipeline": config.name,
        "source": _plugin_section(loaded, plan.source, config.source, ("source",)),
        "steps": steps,
        "sink": _plugin_section(loaded, plan.sink, config.sink, ("sink",)),
        "dead_letter": _model_rows(loaded, config.dead_letter, ("dead_letter",)),
        "runtime": _model_rows(loaded, config.runtime, ("runtime",)),
    }


def _plugin_section(loaded: Any, plugin: Any, spec: Any, path: tuple[str | int, ...]
                    ) -> dict[str, Any]:
    options = plugin.options
    values = _dump(options)
    rows: dict[str, Row] = {}
    for name, field in type(options).model_fields.items():
        key = field.alias or name
        given = key in spec.options
        rows[key] = _row(loaded, (*path, key), values.get(key), given)
    spec_values = _dump(spec)
    extra = _STEP_KEYS if path[0] == "steps" else ()
    for key in (*extra, *_POLICY_KEYS):
        given = key in spec.model_fields_set
        if given or key in extra:
            rows[key] = _row(loaded, (*path, key), spec_values.get(key), given)
    return {"id": plugin.context.plugin_id, "use": spec.use,
            "plugin": f"{type(plugin).__module__}:{type(plugin).__qualname__}", "options": rows}


def _model_rows(loaded: Any, model: Any, path: tuple[str | int, ...]) -> dict[str, Row]:
    values = _dump(model)
    return {key: _row(loaded, (*path, key), values.get(key), key in model.model_fields_set)
            for key in type(model).model_fields}


def _row(loaded: Any, path: tuple[str | int, ...], value: Any, given: bool) -> Row:
    from headrace.config import dotted, is_secret_name

    below = {p: o for p, o in loaded.origins.items()
             if len(p) > len(path) and p[:len(path)] == path}
    if not given:
        origin = DEFAULT
    elif path in loaded.origins or path in loaded.locations.lines or not below:
        origin = loaded.origin_of(path)
    else:  # a mapping that only --set or a variable created: its keys tell
        origin = ", ".join(sorted(set(below.values())))
    row: Row = {"value": _mask(value, any(is_secret_name(str(p)) for p in path[1:])),
                "origin": origin}
    # Keys below that another layer gave (not merely another line of the same file).
    parts = {dotted(p[len(path) - 1:]): o for p, o in below.items()
             if _without_line(o) not in _without_line(origin)}
    if given and parts:
        row["parts"] = parts
    return row


def _without_line(origin: str) -> str:
    head, _, line = origin.rpartition(":")
    return head if head and line.isdigit() else origin


def _mask(value: Any, secret: bool) -> Any:
    """``value`` with every value under a secret-looking key replaced by ``***``."""
    from headrace.config import is_secret_name

    if isinstance(value, dict):
        return {k: _mask(v, secret or is_secret_name(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secret) for v in value]
    return MASK if secret and value is not None else value


def _dump(model: Any) -> dict[str, Any]:
    from pydantic_core import PydanticSerializationError

    try:
        return dict(model.model_dump(mode="json", by_alias=True))
    except PydanticSerializationError:  # a value JSON cannot hold is shown as its repr
        return {k: v if isinstance(v, str | int | float | bool | None) else repr(v)
                for k, v in model.model_dump(by_alias=True).items()}


def render(document: dict[str, Any], file: str) -> str:
    """The text form: one block per section, one line per option: key, value, origin."""
    blocks = [f"pipeline {document['pipeline']} ({file})"]
    sections: list[tuple[str, dict[str, Row]]] = []
    for name in ("source", "steps", "sink"):
        for section in document[name] if name == "steps" else [document[name]]:
            kind = "step" if name == "steps" else name
            title = f"{kind} {section['id']} (use: {section['use']})"
            sections.append((title, section["options"]))
    sections += [("dead_letter", document["dead_letter"]), ("runtime", document["runtime"])]
    for title, rows in sections:
        blocks.append("")
        blocks.append(title)
        shown = {key: json.dumps(row["value"], default=str) for key, row in rows.items()}
        key_width = max((len(k) for k in rows), default=0)
        value_width = min(max((len(v) for v in shown.values()), default=0), 40)
        for key, row in rows.items():
            blocks.append(f"  {key:<{key_width}}  {shown[key]:<{value_width}}  {row['origin']}")
            for part, origin in row.get("parts", {}).items():
                blocks.append(f"  {'':<{key_width}}  {'  ' + part:<{value_width}}  {origin}")
    return "\n".join(blocks)
