"""Pipeline files: the model, loading (YAML/TOML), interpolation, overrides, secrets, and
the user's layers under them (the user config file, ``HEADRACE_<PLUGIN>__<OPTION>``).

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
from ._user import UserConfig, disabled_plugins, load_user_config

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
    "UserConfig",
    "did_you_mean",
    "disabled_plugins",
    "dotted",
    "is_secret_name",
    "load_pipeline",
    "load_user_config",
    "parse_byte_size",
    "parse_duration",
    "parse_scalar",
    "redact",
    "redact_data",
    "register_secret",
    "validation_error",
]
