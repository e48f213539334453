"""What the engine gives every plugin instance."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from headrace.config import Locations

from ._signals import CallPolicy


@dataclass(frozen=True)
class PluginContext:
    """Per-plugin context: its id, where the pipeline lives, a logger."""

    plugin_id: str
    base_dir: Path
    pipeline_name: str = "pipeline"
    locations: Locations | None = None
    config_path: tuple[str | int, ...] = ()
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("headrace.plugin"))
    #: The step's timeout/retry/breaker/rate limit, for steps that apply them per record.
    policy: CallPolicy | None = None

    def resolve_path(self, path: str) -> Path:
        """A path from the pipeline file, relative to the pipeline file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def where(self, *key: str | int) -> str:
        """``file:line`` of one of this plugin's options, for error messages."""
        if self.locations is None:
            return self.plugin_id
        return self.locations.where((*self.config_path, *key))
