"""Pipeline files: the model, loading (YAML/TOML), interpolation, overrides.

Layer: imports only ``headrace.errors`` (and pydantic, ruamel.yaml, tomllib).
"""

from ._errors import did_you_mean, dotted, validation_error
from ._loader import LoadedPipeline, load_pipeline, parse_scalar
from ._locations import Loc, Locations
from ._model import (
    STEP_RESERVED_KEYS,
    DeadLetterConfig,
    PipelineConfig,
    PluginSpec,
    RuntimeConfig,
)

__all__ = [
    "STEP_RESERVED_KEYS",
    "DeadLetterConfig",
    "LoadedPipeline",
    "Loc",
    "Locations",
    "PipelineConfig",
    "PluginSpec",
    "RuntimeConfig",
    "did_you_mean",
    "dotted",
    "load_pipeline",
    "parse_scalar",
    "validation_error",
]
