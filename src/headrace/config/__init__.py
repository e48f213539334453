"""Pipeline files: the model, loading (YAML/TOML), interpolation, overrides, secrets.

Layer: imports only ``headrace.errors`` (and pydantic, ruamel.yaml, tomllib).
"""

from ._errors import did_you_mean, dotted, validation_error
from ._loader import LoadedPipeline, load_pipeline, parse_scalar
from ._locations import Loc, Locations
from ._model import (
    POLICY_KEYS,
    STEP_RESERVED_KEYS,
    DeadLetterConfig,
    PipelineConfig,
    PluginSpec,
    RuntimeConfig,
)
from ._policies import (
    BreakerPolicy,
    ByteSize,
    Duration,
    Policies,
    RateLimitPolicy,
    RetryPolicy,
    parse_byte_size,
    parse_duration,
)
from ._secrets import is_secret_name, redact, redact_data, register_secret

__all__ = [
    "POLICY_KEYS",
    "STEP_RESERVED_KEYS",
    "BreakerPolicy",
    "ByteSize",
    "DeadLetterConfig",
    "Duration",
    "LoadedPipeline",
    "Loc",
    "Locations",
    "PipelineConfig",
    "PluginSpec",
    "Policies",
    "RateLimitPolicy",
    "RetryPolicy",
    "RuntimeConfig",
    "did_you_mean",
    "dotted",
    "is_secret_name",
    "load_pipeline",
    "parse_byte_size",
    "parse_duration",
    "parse_scalar",
    "redact",
    "redact_data",
    "register_secret",
    "validation_error",
]
