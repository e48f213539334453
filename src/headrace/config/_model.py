"""The pipeline file's model: the same for YAML and TOML."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._policies import Breaker, ByteSize, Duration, Policies, RateLimit, Retry, RetryPolicy

POLICY_KEYS = ("timeout", "retry", "breaker", "rate_limit")
STEP_RESERVED_KEYS = frozenset({"id", "use", "concurrency", "executor", "on_error", *POLICY_KEYS})
# Sources and sinks take policies too; only those that call out (HTTP) accept them.
ENDPOINT_RESERVED_KEYS = frozenset({"id", "use", *POLICY_KEYS})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginSpec(_Strict):
    """One ``source``, step or ``sink`` mapping: ``use`` plus reserved keys plus options."""

    use: str = Field(min_length=1, description="Plugin name, or `module:Class` import path.")
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    concurrency: int = Field(default=1, ge=1, le=256, description="Batches in flight.")
    executor: Literal["async", "thread", "process"] | None = Field(
        default=None, description="Where the step's function runs; default: the plugin's choice."
    )
    on_error: Literal["dead_letter", "fail", "skip"] = Field(
        default="dead_letter",
        description="A record that fails: to the dead-letter output, fail the run, or drop it.",
    )
    timeout: Duration | None = Field(default=None, gt=0, le=86400,
                                     description="Seconds one call may take; then it is retried.")
    retry: Retry | None = Field(default=None, description="Retries of transient failures.")
    breaker: Breaker = Field(default=None, description="Circuit breaker; `true` for defaults.")
    rate_limit: RateLimit | None = Field(default=None, description="e.g. 50/s or 600/min.")
    options: dict[str, Any] = Field(default_factory=dict, description="The plugin's own options.")

    def policies(self, defaults: RuntimeConfig) -> Policies:
        """This step's policies: its own keys where set, else the runtime defaults."""
        chosen = {
            key: getattr(self if key in self.model_fields_set else defaults, key)
            for key in POLICY_KEYS
        }
        if chosen["retry"] is None:
            chosen["retry"] = RetryPolicy()
        return Policies(**chosen)


class DeadLetterConfig(_Strict):
    path: str | None = Field(
        default=None, description="JSONL file; default: next to the sink, <sink>.dead.jsonl."
    )


class RuntimeConfig(_Strict):
    loop: Literal["asyncio", "uvloop", "auto"] = "auto"
    channel_size: int = Field(default=2, ge=1, le=1024, description="Batches buffered per edge.")
    max_failures: int | str = Field(
        default=0, description="Dead-lettered records allowed before exit 1: a count or 'N%'."
    )
    progress_interval: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds between one-line progress summaries."
    )
    drain_timeout: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds a graceful stop may take to drain."
    )
    run_dir: str | None = Field(
        default=None,
        description="Checkpoint ledger and summary.json; default .headrace/runs/<name>.",
    )
    checkpoint: bool = Field(
        default=True, description="Record progress so `headrace run --resume` can continue."
    )
    checkpoint_interval: Duration = Field(
        default=10.0, gt=0, le=3600,
        description="Seconds between checkpoints (each one closes a Parquet segment)."
    )
    loop_block_warning: Duration | None = Field(
        default=0.5, gt=0, le=3600,
        description="Warn (naming the code) when the event loop is blocked this long; "
        "null: never check.")
    memory_budget: ByteSize | None = Field(
        default=None, gt=0,
        description="Bytes of batches in flight across all channels (e.g. 512MB); the "
        "source waits when it is reached. null: bounded by channel_size only.")
    timeout: Duration | None = Field(default=None, gt=0, le=86400,
                                     description="Default `timeout` of every step.")
    retry: Retry = Field(default_factory=RetryPolicy, description="Default `retry` of every step.")
    breaker: Breaker = Field(default=None, description="Default `breaker` of every step.")
    rate_limit: RateLimit | None = Field(default=None,
                                         description="Default `rate_limit` of every step.")

    @field_validator("max_failures")
    @classmethod
    def _check_max_failures(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must be >= 0")
            return value
        text = value.strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1
            if 0 <= percent <= 100:
                return text
        raise ValueError("must be a count (e.g. 10) or a percentage between 0% and 100%")

    def failure_budget(self, records_in: int) -> int:
        """How many dead letters a run with ``records_in`` records may have and still pass."""
        if isinstance(self.max_failures, int):
            return self.max_failures
        return int(records_in * float(self.max_failures[:-1]) / 100)


class PipelineConfig(_Strict):
    version: Literal[1] = Field(description="Pipeline file format version.")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    source: PluginSpec
    steps: list[PluginSpec] = Field(default_factory=list)
    sink: PluginSpec
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
