"""The exception tree of headrace. Users catch ``HeadraceError`` or a precise subclass.

::

    HeadraceError                  base; ``exit_code`` decides the CLI's exit status
    ├── ConfigError                the pipeline file or options are wrong (exit 2)
    │   ├── ConfigFileError        missing, unreadable or unparsable file
    │   ├── ConfigValueError       an unknown key, a wrong type, a missing variable
    │   ├── PluginNotFoundError    ``use:`` names no known plugin
    │   └── ExpressionError        a SQL expression that does not compile
    ├── PluginError                a plugin failed to load or broke its contract (exit 2)
    │   └── PluginFailed           a plugin raised while running: open, read, write, close (1)
    ├── SourceError                a source cannot be read at all (exit 1)
    ├── SinkError                  a sink cannot write (not writable, disk full) (exit 1)
    └── StepError                  a step failed and its policy says ``on_error: fail`` (exit 1)

A run stopped by SIGINT/SIGTERM is not an error: its summary says ``interrupted`` and the CLI
exits 130/143.

Errors that concern one record never escape as exceptions: the record goes to the
dead-letter output with its reason.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigFileError",
    "ConfigValueError",
    "ExpressionError",
    "HeadraceError",
    "PluginError",
    "PluginFailed",
    "PluginNotFoundError",
    "SinkError",
    "SourceError",
    "StepError",
]


class HeadraceError(Exception):
    """Base class of every error headrace raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint on one line, as the CLI prints it."""
        text = self.message.replace("\n", " ")
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ConfigError(HeadraceError):
    """The pipeline file or an option is wrong; the run never starts."""

    exit_code = 2


class ConfigFileError(ConfigError):
    """The pipeline file is missing, unreadable, or not valid YAML/TOML."""


class ConfigValueError(ConfigError):
    """A key or value in the pipeline file is wrong."""


class PluginNotFoundError(ConfigError):
    """``use:`` names a plugin that is not installed."""


class ExpressionError(ConfigError):
    """A SQL expression in a step does not parse or bind."""


class PluginError(HeadraceError):
    """A plugin could not be loaded or broke its contract."""

    exit_code = 2


class PluginFailed(PluginError):
    """A plugin raised an unexpected exception in ``open``, while reading or writing, in
    ``checkpoint``/``finish``, or in ``close``; the message names the plugin and the phase."""

    exit_code = 1


class SourceError(HeadraceError):
    """The source cannot be read at all (one bad record is a dead letter, not this)."""


class SinkError(HeadraceError):
    """The sink cannot write its output."""


class StepError(HeadraceError):
    """A step failed and its ``on_error`` policy is ``fail``."""
