"""Read a pipeline file (YAML or TOML), interpolate, apply overrides, validate."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from headrace.errors import ConfigFileError, ConfigValueError

from ._errors import did_you_mean, validation_error
from ._interpolate import interpolate
from ._locations import Loc, Locations, toml_locations
from ._model import (
    ENDPOINT_RESERVED_KEYS,
    STEP_RESERVED_KEYS,
    PipelineConfig,
    PluginSpec,
)

_TOP_KEYS = set(PipelineConfig.model_fields)
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in
               ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline with what is needed to explain errors found later."""

    config: PipelineConfig
    path: Path
    locations: Locations
    text: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_pipeline(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LoadedPipeline:
    """Load and validate ``path``; every problem is a ``ConfigError`` naming file and line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(
            f"{file}: no such pipeline file", hint="headrace init writes an example"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{file}: cannot read the pipeline file: {exc}") from exc
    if file.suffix.lower() == ".toml":
        data, locations = _parse_toml(file, text)
    else:
        data, locations = _parse_yaml(file, text)
    if not isinstance(data, dict):
        raise ConfigFileError(f"{file}: a pipeline file must be a mapping of keys to values")
    data = interpolate(data, os.environ if environ is None else environ, locations.where)
    for override in overrides:
        _apply_override(data, override)
    config = _validate(data, locations)
    return LoadedPipeline(config=config, path=file.resolve(), locations=locations, text=text)


def _parse_toml(file: Path, text: str) -> tuple[Any, Locations]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{file}: invalid TOML: {exc}") from None
    return data, toml_locations(file, text)


def _parse_yaml(file: Path, text: str) -> tuple[Any, Locations]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="safe", pure=True)
    try:
        node = yaml.compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigFileError(f"{file}{line}: invalid YAML: {problem}") from None
    except YAMLError as exc:
        raise ConfigFileError(f"{file}: invalid YAML: {exc}") from None
    if node is None:
        raise ConfigFileError(f"{file}: the pipeline file is empty", hint="headrace init")
    locations = Locations(file)
    data = _from_node(node, (), locations, set(), yaml.constructor)
    return data, locations


def _from_node(
    node: Any, path: Loc, locations: Locations, seen: set[int], constructor: Any
) -> Any:
    """Plain Python data from a YAML node, refusing tags and aliases (no object construction)."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    line = node.start_mark.line + 1
    where = f"{locations.file}:{line}"
    if id(node) in seen:
        raise ConfigFileError(f"{where}: YAML aliases (*anchor) are not allowed in pipeline files")
    seen.add(id(node))
    tag = node.tag.value if hasattr(node.tag, "value") else node.tag
    if tag and str(tag) not in _PLAIN_TAGS:
        raise ConfigFileError(f"{where}: YAML tag {tag} is not allowed in pipeline files")
    locations.lines.setdefault(path, line)
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, constructor)
            if key == "<<":
                raise ConfigFileError(f"{where}: YAML merge keys (<<) are not allowed")
            key = str(key)
            if key in result:
                raise ConfigFileError(
                    f"{locations.file}:{key_node.start_mark.line + 1}: duplicate key '{key}'"
                )
            locations.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _from_node(value_node, (*path, key), locations, seen, constructor)
        return result
    if isinstance(node, SequenceNode):
        return [
            _from_node(item, (*path, i), locations, seen, constructor)
            for i, item in enumerate(node.value)
        ]
    if isinstance(node, ScalarNode):
        return _scalar(node, constructor)
    raise ConfigFileError(f"{where}: unsupported YAML node")


def _scalar(node: Any, constructor: Any) -> Any:
    from ruamel.yaml.nodes import ScalarNode

    if not isinstance(node, ScalarNode):
        raise ConfigFileError(f"line {node.start_mark.line + 1}: keys must be plain scalars")
    tag = getattr(node.tag, "value", node.tag)
    if tag == "tag:yaml.org,2002:timestamp":
        return node.value  # keep dates as the text the user wrote
    return constructor.construct_object(node, deep=True)


def parse_scalar(text: str) -> Any:
    """A ``--set`` value: YAML scalar rules (numbers, booleans, null), else the text itself."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        value = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool | type(None)) else text


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigValueError(
            f"--set {override!r}: expected key=value", hint="e.g. --set source.path=other.csv"
        )
    parts = key.strip().split(".")
    target: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(target, list):
            index = _list_index(target, part, key)
            if last:
                target[index] = parse_scalar(raw)
                return
            target = target[index]
        elif isinstance(target, dict):
            if last:
                target[part] = parse_scalar(raw)
                return
            target = target.setdefault(part, {})
        else:
            raise ConfigValueError(f"--set {key}: '{parts[i - 1]}' is not a mapping or list")


def _list_index(items: list[Any], part: str, key: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if -len(items) <= index < len(items):
            return index
        raise ConfigValueError(f"--set {key}: index {index} is out of range ({len(items)} items)")
    for index, item in enumerate(items):
        if isinstance(item, dict) and (item.get("id") or item.get("use")) == part:
            return index
    raise ConfigValueError(f"--set {key}: no step with id '{part}'")


def _split_spec(raw: Any, path: Loc, reserved: frozenset[str], locations: Locations) -> Any:
    """Separate reserved keys from the plugin's own options."""
    if not isinstance(raw, dict):
        return raw
    spec = {k: v for k, v in raw.items() if k in reserved}
    spec["options"] = {k: v for k, v in raw.items() if k not in reserved}
    return spec


def _validate(data: dict[str, Any], locations: Locations) -> PipelineConfig:
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigValueError(
                f"{locations.where((key,))}: unknown key '{key}'",
                hint=did_you_mean(key, _TOP_KEYS),
            )
    shaped = dict(data)
    if "source" in shaped:
        shaped["source"] = _split_spec(
            shaped["source"], ("source",), ENDPOINT_RESERVED_KEYS, locations
        )
    if "sink" in shaped:
        shaped["sink"] = _split_spec(shaped["sink"], ("sink",), ENDPOINT_RESERVED_KEYS, locations)
    if isinstance(shaped.get("steps"), list):
        shaped["steps"] = [
            _split_spec(step, ("steps", i), STEP_RESERVED_KEYS, locations)
            for i, step in enumerate(shaped["steps"])
        ]
    try:
        return PipelineConfig.model_validate(shaped)
    except ValidationError as exc:
        error = exc.errors()[0]
        section = error["loc"][0] if error["loc"] else None
        known: set[str] = set()
        if section in ("dead_letter", "runtime"):
            known = set(PipelineConfig.model_fields[str(section)].annotation.model_fields)  # type: ignore[union-attr]
        else:
            known = set(PluginSpec.model_fields) | _TOP_KEYS
        raise validation_error(exc, locations, known_keys=known) from None
