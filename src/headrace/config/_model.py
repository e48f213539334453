"""The pipeline file's model: the same for YAML and TOML."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STEP_RESERVED_KEYS = frozenset({
    "id", "use", "concurrency", "executor", "on_error", "timeout", "retry", "breaker", "rate_limit",
})
# Reserved by the interface contract, implemented by the runtime-policies work.
NOT_YET_AVAILABLE_KEYS = frozenset({"timeout", "retry", "breaker", "rate_limit"})
ENDPOINT_RESERVED_KEYS = frozenset({"id", "use"})


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
    options: dict[str, Any] = Field(default_factory=dict, description="The plugin's own options.")


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
        default=None, description="Where summary.json goes; default .headrace/runs/<name>."
    )

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
