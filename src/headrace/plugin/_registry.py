"""Plugins are found through entry points (built-ins included) and loaded lazily by name.

Two packages may register one name: that name then fails to load with a message naming both
(the others keep working) until one is disabled (``HEADRACE_DISABLE_PLUGINS=dist:name``) or the
pipeline names the class by import path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint, entry_points
from typing import NoReturn

from pydantic import BaseModel

from headrace.config import did_you_mean, disabled_plugins
from headrace.errors import PluginError, PluginNotFoundError

from ._contracts import Plugin, Sink, Source, Step

GROUPS: dict[str, str] = {
    "source": "headrace.sources",
    "step": "headrace.steps",
    "sink": "headrace.sinks",
}
BASES: dict[str, type[Plugin]] = {"source": Source, "step": Step, "sink": Sink}
DISABLE_HINT = "HEADRACE_DISABLE_PLUGINS or plugins.disable in the user config"


@dataclass(frozen=True)
class PluginInfo:
    """A discovered plugin, before it is imported."""

    name: str
    kind: str
    target: str
    distribution: str
    version: str
    disabled: bool = False
    #: Other packages registering the same kind and name ("dist version (target)").
    conflicts: tuple[str, ...] = ()

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version} ({self.target})"


def _info(kind: str, ep: EntryPoint, disabled: frozenset[str]) -> PluginInfo:
    dist = ep.dist
    name = dist.metadata["Name"] if dist else "?"
    return PluginInfo(
        name=ep.name, kind=kind, target=ep.value, distribution=name,
        version=dist.version if dist else "?",
        disabled=ep.name in disabled or f"{name}:{ep.name}" in disabled,
    )


def _providers(kind: str, name: str | None = None) -> list[tuple[PluginInfo, EntryPoint]]:
    """Entry points of one kind (and name), one per distribution and target: the same
    distribution found twice on the path is not a conflict."""
    disabled = disabled_plugins()
    found: dict[tuple[str, str, str], tuple[PluginInfo, EntryPoint]] = {}
    group = entry_points(group=GROUPS[kind], name=name) if name else entry_points(
        group=GROUPS[kind])
    for ep in group:
        info = _info(kind, ep, disabled)
        found.setdefault((info.name, info.distribution, info.target), (info, ep))
    return [found[key] for key in sorted(found)]


def discover() -> list[PluginInfo]:
    """Every plugin installed (disabled ones marked), by kind and name, importing none."""
    result: list[PluginInfo] = []
    for kind in GROUPS:
        providers = [info for info, _ in _providers(kind)]
        for info in providers:
            others = tuple(o.provider for o in providers
                           if o.name == info.name and o is not info and not o.disabled)
            result.append(info if not others or info.disabled else
                          replace(info, conflicts=others))
    return sorted(result, key=lambda p: (p.kind, p.name, p.distribution))


def load_plugin(kind: str, name: str) -> type[Plugin]:
    """The plugin class for ``use: name``: an entry-point name or a ``module:Class`` path."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginNotFoundError(f"cannot import plugin {name!r}: {exc}") from None
        except Exception as exc:  # the module itself raised while importing
            raise PluginError(f"{kind} plugin {name!r} failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
        return _check(kind, name, obj, "")
    providers = _providers(kind, name)
    if not providers:
        _not_found(kind, name)
    enabled = [(info, ep) for info, ep in providers if not info.disabled]
    if not enabled:
        raise PluginNotFoundError(f"{kind} plugin '{name}' is disabled ({DISABLE_HINT})")
    if len(enabled) > 1:
        listed = ", ".join(info.provider for info, _ in enabled)
        first = enabled[0][0]
        raise PluginError(
            f"{kind} plugin '{name}' is registered by more than one package: {listed}",
            hint=f"disable one (HEADRACE_DISABLE_PLUGINS={enabled[1][0].distribution}:{name})"
                 f" or name the class by import path (use: {first.target})",
        )
    info, ep = enabled[0]
    try:
        obj = ep.load()
    except Exception as exc:  # a broken third-party plugin must not take the CLI down
        raise PluginError(
            f"{kind} plugin '{name}' from {info.distribution} {info.version} failed to "
            f"import: {type(exc).__name__}: {exc}"
        ) from exc
    return _check(kind, name, obj, f"{info.distribution} {info.version}")


def _not_found(kind: str, name: str) -> NoReturn:
    others = [k for k in GROUPS if k != kind and any(
        not info.disabled for info, _ in _providers(k, name))]
    if others:
        raise PluginNotFoundError(
            f"'{name}' is a {others[0]} plugin, not a {kind}",
            hint=f"see: headrace plugins list --kind {kind}",
        )
    names = [info.name for info, _ in _providers(kind) if not info.disabled]
    raise PluginNotFoundError(
        f"unknown {kind} plugin '{name}'",
        hint=did_you_mean(name, names) or "see: headrace plugins list",
    )


def _check(kind: str, name: str, obj: object, origin: str) -> type[Plugin]:
    base = BASES[kind]
    where = f" ({origin})" if origin else ""
    if not (isinstance(obj, type) and issubclass(obj, base)):
        actual = next((k for k, b in BASES.items()
                       if isinstance(obj, type) and issubclass(obj, b)), None)
        what = f"a {actual} plugin" if actual else f"not a {base.__name__} subclass"
        raise PluginError(f"{kind} plugin '{name}'{where} is {what}, not a {kind}"
                          if actual else f"{kind} plugin '{name}'{where} is {what}")
    options = getattr(obj, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(
            f"{kind} plugin '{name}'{where} declares a bad options model: Options must be a "
            "pydantic model (subclass headrace.plugin.Options)")
    if origin and not obj.origin:
        obj.origin = origin
    return obj
