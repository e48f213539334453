"""The engine: plans, bounded channels, stages, accounting, dead letters, events.

Layer: imports ``headrace.plugin``, ``headrace.config`` and ``headrace.errors``; it never names a
concrete plugin, the CLI, rich or a broker.
"""

from ._deadletter import DeadLetterWriter, summarize_dead_letters
from ._events import (
    BatchProcessed,
    BatchRead,
    BatchWritten,
    BreakerChanged,
    CheckpointCommitted,
    EdgeFill,
    Event,
    EventBus,
    Observer,
    RateLimited,
    RetryScheduled,
    RunFinished,
    RunStarted,
    Sampled,
    StopRequested,
)
from ._files import discard, fsync_dir, prepare_output, publish
from ._ledger import Checkpoint, Ledger, ResumeError, default_run_dir, private_dir
from ._plan import Plan, PlannedStep, build_plan, check_schemas
from ._projection import apply_projection, needed_source_columns
from ._replay import ReplayPlan, replay_plan
from ._runner import Runner, RunResult, dead_letter_path, run_plan
from ._stats import RunStats, StepStats

__all__ = [
    "BatchProcessed",
    "BatchRead",
    "BatchWritten",
    "BreakerChanged",
    "Checkpoint",
    "CheckpointCommitted",
    "DeadLetterWriter",
    "EdgeFill",
    "Event",
    "EventBus",
    "Ledger",
    "Observer",
    "Plan",
    "PlannedStep",
    "RateLimited",
    "ReplayPlan",
    "ResumeError",
    "RetryScheduled",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "RunStats",
    "Runner",
    "Sampled",
    "StepStats",
    "StopRequested",
    "apply_projection",
    "build_plan",
    "check_schemas",
    "dead_letter_path",
    "default_run_dir",
    "discard",
    "fsync_dir",
    "needed_source_columns",
    "prepare_output",
    "private_dir",
    "publish",
    "replay_plan",
    "run_plan",
    "summarize_dead_letters",
]
