"""headrace: run data pipelines from the command line.

Layers, each importing only those below it (``tests/test_layers.py`` enforces this)::

    cli                 commands, terminal rendering, exit codes; nothing imports it
    builtins            built-in sources, steps and sinks: ordinary plugins
    engine              plans, channels, stages, accounting, dead letters, events
    plugin              Source / Step / Sink contracts, Batch, context, registry, SQL
    config              pipeline model, loading, interpolation
    errors              the exception tree

Importing ``headrace`` loads neither the CLI nor rich, pandas or any broker client.
"""

from ._version import __version__
from .errors import (
    ConfigError,
    ExpressionError,
    HeadraceError,
    PluginError,
    PluginFailed,
    SinkError,
    SourceError,
    StepError,
)

__all__ = [
    "ConfigError",
    "ExpressionError",
    "HeadraceError",
    "PluginError",
    "PluginFailed",
    "SinkError",
    "SourceError",
    "StepError",
    "__version__",
]
