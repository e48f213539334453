"""Plugins are found through entry points (built-ins included) and loaded lazily by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from headrace.config import did_you_mean
from headrace.errors import PluginError, PluginNotFoundError

from ._contracts import Plugin, Sink, Source, Step

GROUPS: dict[str, str] = {
    "source": "headrace.sources",
    "step": "headrace.steps",
    "sink": "headrace.sinks",
}
BASES: dict[str, type[Plugin]] = {"source": Source, "step": Step, "sink": Sink}


@dataclass(frozen=True)
class PluginInfo:
    """A discovered plugin, before it is imported."""

    name: str
    kind: str
    target: str
    distribution: str
    version: str


def discover() -> list[PluginInfo]:
    """Every plugin installed, by kind and name, without importing any of them."""
    found: list[PluginInfo] = []
    for kind, group in GROUPS.items():
        for ep in entry_points(group=group):
            dist = ep.dist
            found.append(
                PluginInfo(
                    name=ep.name,
                    kind=kind,
                    target=ep.value,
                    distribution=dist.metadata["Name"] if dist else "?",
                    version=dist.version if dist else "?",
                )
            )
    return sorted(found, key=lambda p: (p.kind, p.name))


def _entry_point(kind: str, name: str) -> EntryPoint | None:
    matches = entry_points(group=GROUPS[kind], name=name)
    return next(iter(matches), None)


def load_plugin(kind: str, name: str) -> type[Plugin]:
    """The plugin class for ``use: name``: an entry-point name or a ``module:Class`` path."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginNotFoundError(f"cannot import plugin {name!r}: {exc}") from None
        return _check(kind, name, obj, "import path")
    ep = _entry_point(kind, name)
    if ep is None:
        others = [k for k in GROUPS if k != kind and _entry_point(k, name) is not None]
        if others:
            raise PluginNotFoundError(
                f"'{name}' is a {others[0]} plugin, not a {kind}",
                hint=f"see: headrace plugins list --kind {kind}",
            )
        names = [ep.name for ep in entry_points(group=GROUPS[kind])]
        raise PluginNotFoundError(
            f"unknown {kind} plugin '{name}'",
            hint=did_you_mean(name, names) or "see: headrace plugins list",
        )
    dist = ep.dist.metadata["Name"] if ep.dist else "?"
    try:
        obj = ep.load()
    except Exception as exc:  # a broken third-party plugin must not take the CLI down
        raise PluginError(
            f"{kind} plugin '{name}' from {dist} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return _check(kind, name, obj, dist)


def _check(kind: str, name: str, obj: object, origin: str) -> type[Plugin]:
    base = BASES[kind]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginError(f"{kind} plugin '{name}' ({origin}) is not a {base.__name__} subclass")
    return obj
