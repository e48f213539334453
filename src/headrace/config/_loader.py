"""Read a pipeline file (YAML or TOML), interpolate, layer overrides and defaults, validate.

Precedence of a plugin option, highest first: ``--set``, an ``HEADRACE_<PLUGIN>__<OPTION>``
variable, the pipeline file, the user config file, the plugin's own default. Where each value
that is not from the pipeline file came from is kept in ``Locations.origins``.
"""

from __future__ import annotations

import copy
import functools
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
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
    POLICY_KEYS,
    STEP_RESERVED_KEYS,
    PipelineConfig,
    PluginSpec,
)
from ._user import EnvOption, UserConfig, env_options, load_user_config

_TOP_KEYS = set(PipelineConfig.model_fields)
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in
               ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}
# Keys that shape the pipeline itself: only its file (or --set) may say them, not a
# per-plugin default. The policies (timeout, retry, breaker, rate_limit) may be defaults.
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_NOT_LAYERED = STEP_RESERVED_KEYS - set(POLICY_KEYS)


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

    @property
    def origins(self) -> dict[Loc, str]:
        """Origins of the values that did not come from the pipeline file, by key path:
        ``--set``, ``env NAME`` or ``user config FILE:LINE``."""
        return self.locations.origins

    def origin_of(self, path: Loc) -> str:
        """Where the value at ``path`` was given (``file:line`` when in the pipeline file)."""
        return self.locations.where(path)


def load_pipeline(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    user_config: UserConfig | None = None,
) -> LoadedPipeline:
    """Load and validate ``path``; every problem is a ``ConfigError`` naming where it was said.

    ``environ`` (default ``os.environ``) gives ``${VAR}`` values, ``HEADRACE_<PLUGIN>__<OPTION>``
    variables and the user config's location; ``user_config`` replaces reading that file.
    """
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
    env = os.environ if environ is None else environ
    data = interpolate(data, env, locations.where)
    set_paths = [_apply_override(data, override) for override in overrides]
    for set_path in set_paths:
        _set_origin(locations.origins, set_path, "--set")
    user = load_user_config(environ) if user_config is None else user_config
    _layer_plugin_options(data, user, env_options(env), set_paths, locations.origins)
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
    """A ``--set`` or environment value: YAML scalar rules (numbers, booleans, null), a YAML
    flow list or mapping (``[10, 90]``, ``{a: 1}``), else the text itself."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        value = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return text
    stripped = text.strip()
    if isinstance(value, list | dict) and stripped[:1] in ("[", "{"):
        return value
    if isinstance(value, str) and stripped[:1] not in ("'", '"'):
        return text  # YAML would eat "|", ">", "# ..." and the like; a quoted text is its own
    if value is None and stripped not in _NULLS:
        return text  # "#" is a delimiter, not null
    return value if isinstance(value, str | int | float | bool | type(None)) else text


def _apply_override(data: dict[str, Any], override: str) -> Loc:
    """Set one ``key.path=value``; returns the path set, list items as indexes."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigValueError(
            f"--set {override!r}: expected key=value", hint="e.g. --set source.path=other.csv"
        )
    parts = key.strip().split(".")
    target: Any = data
    resolved: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(target, list):
            index = _list_index(target, part, key)
            resolved.append(index)
            if last:
                target[index] = parse_scalar(raw)
                return tuple(resolved)
            target = target[index]
        elif isinstance(target, dict):
            resolved.append(part)
            if last:
                target[part] = parse_scalar(raw)
                return tuple(resolved)
            target = target.setdefault(part, {})
        else:
            raise ConfigValueError(f"--set {key}: '{parts[i - 1]}' is not a mapping or list")
    raise AssertionError("unreachable")  # the loop returns at the last part


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


def _set_origin(origins: dict[Loc, str], path: Loc, origin: str) -> None:
    """``path`` now comes from ``origin``; what was said below it is gone."""
    for old in [p for p in origins if len(p) > len(path) and p[:len(path)] == path]:
        del origins[old]
    origins[path] = origin


def _plugin_specs(data: dict[str, Any]) -> list[tuple[Loc, dict[str, Any]]]:
    specs: list[tuple[Loc, Any]] = [(("source",), data.get("source"))]
    steps = data.get("steps")
    if isinstance(steps, list):
        specs += [(("steps", i), step) for i, step in enumerate(steps)]
    specs.append((("sink",), data.get("sink")))
    return [(path, spec) for path, spec in specs
            if isinstance(spec, dict) and isinstance(spec.get("use"), str)
            and ":" not in spec["use"]]


def _layer_plugin_options(
    data: dict[str, Any],
    user: UserConfig,
    env: Sequence[EnvOption],
    set_paths: Sequence[Loc],
    origins: dict[Loc, str],
) -> None:
    """Fill each plugin's options from the user config where the pipeline file says nothing,
    then let ``HEADRACE_<PLUGIN>__<OPTION>`` variables override all but ``--set``."""
    runtime = data.get("runtime")
    runtime_given = set(runtime) if isinstance(runtime, dict) else set()
    for path, spec in _plugin_specs(data):
        use: str = spec["use"]
        for key, value in user.plugin_defaults.get(use, {}).items():
            if key in _NOT_LAYERED:
                raise ConfigValueError(
                    f"{user.where(use, (key,))}: plugins.{use}.{key}: '{key}' can only be set "
                    "in the pipeline file", hint="a plugin's defaults are its options, timeout, "
                    "retry, breaker and rate_limit")
            if key in POLICY_KEYS and key in runtime_given:
                continue  # the pipeline's own runtime default beats a user-wide one
            _fill(spec, key, value, path=(*path, key), rel=(key,), origins=origins,
                  where=functools.partial(user.where, use))
        for option in env:
            if not option.matches(use):
                continue
            if not all(option.key):
                raise ConfigValueError(f"env {option.variable}: an empty option name",
                                       hint="HEADRACE_<PLUGIN>__<OPTION>[__<KEY>]")
            if option.key[0] in _NOT_LAYERED:
                raise ConfigValueError(
                    f"env {option.variable}: '{option.key[0]}' can only be set in the "
                    "pipeline file or with --set")
            full = (*path, *option.key)
            if any(_overlaps(full, set_path) for set_path in set_paths):
                continue
            _put(spec, option.key, parse_scalar(option.raw), path=path, origins=origins,
                 origin=f"env {option.variable}")


def _overlaps(a: Loc, b: Loc) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _fill(
    target: dict[str, Any], key: str, value: Any, *,
    path: Loc, rel: Loc, origins: dict[Loc, str], where: Callable[[Loc], str],
) -> None:
    """Set ``key`` (at ``path``; ``rel`` in the user config) if ``target`` lacks it; merge
    into mappings key by key."""
    if key not in target:
        target[key] = copy.deepcopy(value)
        _mark(value, path=path, rel=rel, origins=origins, where=where)
    elif isinstance(target[key], dict) and isinstance(value, dict):
        for sub, sub_value in value.items():
            _fill(target[key], sub, sub_value, path=(*path, sub), rel=(*rel, sub),
                  origins=origins, where=where)


def _mark(
    value: Any, *, path: Loc, rel: Loc, origins: dict[Loc, str], where: Callable[[Loc], str]
) -> None:
    origins[path] = where(rel)
    if isinstance(value, dict):
        for sub, sub_value in value.items():
            _mark(sub_value, path=(*path, sub), rel=(*rel, sub), origins=origins, where=where)


def _put(
    spec: dict[str, Any], key: Loc, value: Any, *, path: Loc, origins: dict[Loc, str],
    origin: str,
) -> None:
    """Set ``key`` (a path under ``spec``) from a higher layer, creating mappings on the way."""
    target = spec
    for depth, part in enumerate(key[:-1], start=1):
        child = target.get(str(part))
        if not isinstance(child, dict):
            child = target[str(part)] = {}
            _set_origin(origins, (*path, *key[:depth]), origin)
        target = child
    target[str(key[-1])] = value
    _set_origin(origins, (*path, *key), origin)


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
