"""The plugin API: contracts, batches, context, registry, SQL expressions.

Layer: imports ``headrace.config`` and ``headrace.errors`` only.
"""

from ._batch import Batch, DeadRecord, Position, empty_table, warm_arrow_conversions
from ._context import Clock, PluginContext, RunServices, SystemClock
from ._contracts import (
    RESERVED_NAMES,
    DataError,
    Executor,
    Options,
    Plugin,
    Sink,
    Source,
    Step,
    StepOutput,
    cancellation_point,
)
from ._records import RecordStep, collect_results, dead_record
from ._registry import GROUPS, PluginInfo, discover, load_plugin
from ._signals import BreakerOpen, CallPolicy, RetriesExhausted, Retry, TransientError
from ._sql import (
    SQL_TABLE,
    SqlEvaluator,
    check_syntax,
    quote_ident,
    referenced_columns,
    sql_connection,
)

__all__ = [
    "GROUPS",
    "RESERVED_NAMES",
    "SQL_TABLE",
    "Batch",
    "BreakerOpen",
    "CallPolicy",
    "Clock",
    "DataError",
    "DeadRecord",
    "Executor",
    "Options",
    "Plugin",
    "PluginContext",
    "PluginInfo",
    "Position",
    "RecordStep",
    "RetriesExhausted",
    "Retry",
    "RunServices",
    "Sink",
    "Source",
    "SqlEvaluator",
    "Step",
    "StepOutput",
    "SystemClock",
    "TransientError",
    "cancellation_point",
    "check_syntax",
    "collect_results",
    "dead_record",
    "discover",
    "empty_table",
    "load_plugin",
    "quote_ident",
    "referenced_columns",
    "sql_connection",
    "warm_arrow_conversions",
]
