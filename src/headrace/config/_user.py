"""The user's own layers under a pipeline file: the user config file and environment variables.

The user config file is ``$HEADRACE_CONFIG`` when set, else
``$XDG_CONFIG_HOME/headrace/config.toml``, else ``~/.config/headrace/config.toml``::

    [plugins]
    disable = ["scrapy"]          # plugins never loaded
    [plugins.http]                # defaults for every `use: http`, whatever its kind
    headers = { Authorization = "Bearer abc" }

Option variables are ``HEADRACE_<PLUGIN>__<OPTION>[__<KEY>...]``; how the layers merge with the
pipeline file is ``_loader``'s business.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headrace.errors import ConfigFileError

from ._locations import Loc, toml_locations
from ._secrets import is_secret_name, register_secret

ENV_PREFIX = "HEADRACE_"
DISABLE_VARIABLE = "HEADRACE_DISABLE_PLUGINS"
CONFIG_VARIABLE = "HEADRACE_CONFIG"
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


@dataclass(frozen=True)
class UserConfig:
    """The user config file, read: per-plugin option defaults and disabled plugins."""

    path: Path | None = None
    plugin_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()
    #: Line of each key, by its path in the file: ``("plugins", "http", "headers")``.
    lines: dict[Loc, int] = field(default_factory=dict)

    def where(self, plugin: str, key: Loc = ()) -> str:
        """``user config FILE:LINE`` of ``[plugins.<plugin>]``'s ``key`` (or nearest parent)."""
        return self.where_path(("plugins", plugin, *key))

    def where_path(self, path: Loc) -> str:
        """``user config FILE:LINE`` of any key path in the file (or its nearest parent)."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return f"user config {self.path}:{line}"
        return f"user config {self.path}"


@dataclass(frozen=True)
class EnvOption:
    """One ``HEADRACE_<PLUGIN>__<OPTION>`` variable, not yet parsed."""

    variable: str
    plugin: str  # as written: upper case, ``_`` for ``-``
    key: Loc  # lower case
    raw: str

    def matches(self, plugin_name: str) -> bool:
        return self.plugin == plugin_name.upper().replace("-", "_")


def user_config_path(environ: Mapping[str, str] | None = None) -> tuple[Path | None, bool]:
    """The user config file to read, and whether it was named explicitly.

    With an explicit ``environ`` (tests), ``~`` is only its ``HOME``: no ``HOME``, no file.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(CONFIG_VARIABLE)
    if explicit:
        return Path(explicit), True
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "headrace" / "config.toml", False
    home = env.get("HOME")
    if home:
        return Path(home) / ".config" / "headrace" / "config.toml", False
    if environ is None:
        try:
            return Path.home() / ".config" / "headrace" / "config.toml", False
        except RuntimeError:
            return None, False
    return None, False


def load_user_config(environ: Mapping[str, str] | None = None) -> UserConfig:
    """Read the user config file; a missing default file is an empty config.

    A file named by ``$HEADRACE_CONFIG`` must exist. Values under secret-looking keys are
    registered as secrets. Raises ``ConfigFileError`` naming the file (and line).
    """
    path, explicit = user_config_path(environ)
    if path is None:
        return UserConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigFileError(f"user config {path}: no such file ({CONFIG_VARIABLE})",
                                  hint=f"unset {CONFIG_VARIABLE} or create the file") from None
        return UserConfig()
    except IsADirectoryError:
        raise ConfigFileError(f"user config {path}: is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"user config {path}: cannot read it: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = f"user config {path}"
        if match := _TOML_POSITION.search(message):
            message = f"{message[:match.start()]} (column {match.group(2)})"
            where += f":{match.group(1)}"
        raise ConfigFileError(f"{where}: invalid TOML: {message}") from None
    lines = toml_locations(path, text).lines
    return _shaped(path, data, lines)


def _shaped(path: Path, data: dict[str, Any], lines: dict[Loc, int]) -> UserConfig:
    def fail(key: Loc, message: str) -> ConfigFileError:
        where = UserConfig(path=path, lines=lines).where_path(key)
        return ConfigFileError(f"{where}: {message}")

    for key in data:
        if key != "plugins":
            raise fail((key,), f"unknown table '{key}' (the user config has only [plugins])")
    plugins = data.get("plugins", {})
    if not isinstance(plugins, dict):
        raise fail(("plugins",), "'plugins' must be a table")
    disabled = plugins.get("disable", [])
    if not isinstance(disabled, list) or not all(isinstance(n, str) for n in disabled):
        raise fail(("plugins", "disable"), "plugins.disable must be a list of plugin names")
    defaults: dict[str, dict[str, Any]] = {}
    for name, options in plugins.items():
        if name == "disable":
            continue
        if not isinstance(options, dict):
            raise fail(("plugins", name),
                       f"plugins.{name} must be a table of options ([plugins.{name}])")
        _register_secrets(options)
        defaults[name] = options
    return UserConfig(path=path, plugin_defaults=defaults,
                      disabled=frozenset(n.strip() for n in disabled if n.strip()), lines=lines)


def _register_secrets(data: Any, secret: bool = False) -> None:
    """Register every string under a secret-looking key (at any depth)."""
    if isinstance(data, dict):
        for key, value in data.items():
            _register_secrets(value, secret or is_secret_name(str(key)))
    elif isinstance(data, list):
        for value in data:
            _register_secrets(value, secret)
    elif secret and isinstance(data, str):
        register_secret(data)


def disabled_plugins(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Plugins never to load: ``$HEADRACE_DISABLE_PLUGINS`` (comma separated) and the user
    config's ``plugins.disable``. A broken user config is a ``ConfigFileError``."""
    env = os.environ if environ is None else environ
    from_env = {name.strip() for name in env.get(DISABLE_VARIABLE, "").split(",")}
    return frozenset(from_env - {""}) | load_user_config(environ).disabled


def env_options(environ: Mapping[str, str] | None = None) -> list[EnvOption]:
    """Every ``HEADRACE_<PLUGIN>__<OPTION>`` variable, sorted by name.

    Variables without ``__`` (``HEADRACE_LOG_FORMAT``) are not option variables. Values under
    secret-looking option names are registered as secrets.
    """
    env = os.environ if environ is None else environ
    found = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        plugin, *key = name[len(ENV_PREFIX):].split("__")
        value = env[name]
        if any(is_secret_name(part) for part in key):
            register_secret(value)
        found.append(EnvOption(variable=name, plugin=plugin,
                               key=tuple(part.lower() for part in key), raw=value))
    return found
