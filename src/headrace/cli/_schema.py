"""The JSON Schema of the pipeline file, composed from the core model and every plugin's
options (so editors can complete ``use:`` and each plugin's keys)."""

from __future__ import annotations

from typing import Any

from headrace.config import PipelineConfig, PluginSpec
from headrace.plugin import discover, load_plugin

_STEP_RESERVED = ("id", "concurrency", "executor", "on_error")


def _plugin_schema(kind: str, name: str) -> dict[str, Any]:
    cls = load_plugin(kind, name)
    schema = cls.Options.model_json_schema()
    properties: dict[str, Any] = {"use": {"const": name}}
    spec_props = PluginSpec.model_json_schema()["properties"]
    properties["id"] = spec_props["id"]
    if kind == "step":
        for key in _STEP_RESERVED:
            properties[key] = spec_props[key]
    properties.update(schema.get("properties", {}))
    result: dict[str, Any] = {
        "type": "object",
        "title": f"{kind} {name}",
        "description": cls.summary,
        "properties": properties,
        "required": ["use", *schema.get("required", [])],
        "additionalProperties": False,
    }
    if "$defs" in schema:
        result["$defs"] = schema["$defs"]
    return result


def pipeline_json_schema() -> dict[str, Any]:
    schema = PipelineConfig.model_json_schema()
    by_kind: dict[str, list[dict[str, Any]]] = {"source": [], "step": [], "sink": []}
    for info in discover():
        by_kind[info.kind].append(_plugin_schema(info.kind, info.name))
    props = schema["properties"]
    props["source"] = {"anyOf": by_kind["source"]}
    props["sink"] = {"anyOf": by_kind["sink"]}
    props["steps"] = {"type": "array", "items": {"anyOf": by_kind["step"]}}
    schema.get("$defs", {}).pop("PluginSpec", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "headrace pipeline"
    return schema


def options_rows(kind: str, name: str) -> list[tuple[str, str, str, str]]:
    """(option, type, default, description) for ``plugins show``."""
    cls = load_plugin(kind, name)
    rows = []
    for option, field in cls.Options.model_fields.items():
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
        annotation = annotation.replace("typing.", "")
        default = "required" if field.is_required() else repr(field.get_default(
            call_default_factory=True))
        rows.append((field.alias or option, annotation, default, field.description or ""))
    return rows
