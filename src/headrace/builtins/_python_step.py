"""The ``python`` step: a function named by import path, per record or per batch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import anyio
import pyarrow as pa
from pydantic import Field

from headrace.errors import ConfigValueError
from headrace.plugin import (
    Batch,
    DataError,
    Options,
    Step,
    StepOutput,
    cancellation_point,
    collect_results,
)

from ._imports import load_function

RECORD_CHUNK = 8192


class PythonOptions(Options):
    function: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="module:callable; the module may sit next to the pipeline file.",
    )
    mode: Literal["record", "batch"] = Field(
        default="record",
        description="record: f(dict) -> dict | None (None drops it); batch: f(batch) -> batch.",
    )
    format: Literal["rows", "arrow", "pandas"] = Field(
        default="rows", description="What a batch-mode function receives and returns."
    )
    max_in_flight: int = Field(
        default=64, ge=1, le=10_000,
        description="For async record functions: records of one batch awaited concurrently.",
    )


class PythonStep(Step):
    """Runs your Python function on each record (or each batch), sync or async."""

    summary = "run a Python function per record or per batch (sync or async)"
    example = {"function": "scoring:score", "mode": "record"}
    Options: ClassVar[type[PythonOptions]] = PythonOptions
    options: PythonOptions

    def __init__(self, options: PythonOptions, context: Any) -> None:
        super().__init__(options, context)
        self.function = load_function(options.function, context.where("function"))
        self._async = inspect.iscoroutinefunction(self.function)
        if self._async:
            self.supported_executors = frozenset({"async"})
        else:
            self.supported_executors = frozenset({"async", "thread", "process"})
        self.batch_format = "arrow" if options.mode == "batch" and options.format != "rows" \
            else "rows"
        # An async function per record gets timeout/retry/breaker/rate limit per record.
        self.applies_policy_per_record = self._async and options.mode == "record"

    @property
    def is_async(self) -> bool:
        return self._async

    # -- per record ---------------------------------------------------------------------
    def _collect(self, batch: Batch, results: list[Any]) -> StepOutput:
        return collect_results(batch, batch.to_rows(), results, self.options.function)

    def _records_in_chunks(self, batch: Batch) -> StepOutput:
        """Record mode, a chunk at a time, so only one chunk's dicts are alive at once."""
        outputs = []
        for start in range(0, batch.num_rows, RECORD_CHUNK):
            part = batch.slice(start, min(start + RECORD_CHUNK, batch.num_rows))
            outputs.append(self._collect(part, self._per_record(part.to_rows())))
        if not outputs:  # an empty batch (everything before was filtered or dead)
            return StepOutput(batch)
        if len(outputs) == 1:
            return outputs[0]
        return StepOutput(
            batch=Batch.concat([o.batch for o in outputs]),
            filtered=sum(o.filtered for o in outputs),
            dead=[d for o in outputs for d in o.dead],
        )

    def _per_record(self, rows: list[dict[str, Any]]) -> list[Any]:
        fn = self.function
        policy = self.context.policy
        results: list[Any] = []
        append = results.append
        for i, row in enumerate(rows):
            if i % 256 == 255:
                cancellation_point()
            try:
                append(fn(row))
            except Exception as exc:  # the record's own failure: it becomes a dead letter
                if policy is not None and policy.is_transient(exc):
                    append(self._retry(fn, row, exc))  # the slow path, off the hot loop
                else:
                    append(exc)
        return results

    def _retry(self, fn: Callable[..., Any], row: dict[str, Any], exc: Exception) -> Any:
        assert self.context.policy is not None
        try:
            return self.context.policy.retry_blocking(fn, row, exc)
        except Exception as final:
            return final

    async def _per_record_async(self, rows: list[dict[str, Any]]) -> list[Any]:
        results: list[Any] = [None] * len(rows)
        limiter = anyio.CapacityLimiter(self.options.max_in_flight)

        policy = self.context.policy

        async def one(i: int, row: dict[str, Any]) -> None:
            try:
                if policy is None:
                    async with limiter:
                        results[i] = await self.function(row)
                else:
                    results[i] = await policy.call(lambda: self.function(row), slots=limiter)
            except Exception as exc:
                results[i] = exc

        async with anyio.create_task_group() as tg:
            for i, row in enumerate(rows):
                tg.start_soon(one, i, row)
        return results

    # -- per batch ----------------------------------------------------------------------
    def _batch_input(self, batch: Batch) -> Any:
        if self.options.format == "rows":
            return batch.to_rows()
        if self.options.format == "arrow":
            return batch.to_arrow()
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ConfigValueError(
                "format: pandas needs pandas", hint="pip install 'headrace[pandas]'"
            ) from None
        return batch.to_arrow().to_pandas()

    def _batch_output(self, batch: Batch, result: Any) -> StepOutput:
        n = batch.num_rows
        if result is None:
            return StepOutput(batch.derive(rows=[]), filtered=n)
        if isinstance(result, list):
            return StepOutput(batch.derive(rows=result), filtered=max(0, n - len(result)))
        if isinstance(result, pa.Table | pa.RecordBatch):
            table = result if isinstance(result, pa.Table) else pa.Table.from_batches([result])
            return StepOutput(batch.derive(table=table), filtered=max(0, n - table.num_rows))
        if type(result).__name__ == "DataFrame":
            table = pa.Table.from_pandas(result, preserve_index=False)
            return StepOutput(batch.derive(table=table), filtered=max(0, n - table.num_rows))
        raise DataError(f"{self.options.function} returned {type(result).__name__}; expected "
                        f"the batch's format ({self.options.format})")

    def _call_batch(self, batch: Batch) -> Any:
        try:
            return self.function(self._batch_input(batch))
        except ConfigValueError:
            raise
        except Exception as exc:
            raise self._batch_failure(exc) from exc

    def _batch_failure(self, exc: Exception) -> Exception:
        """A transient error (a timeout, a dropped connection) as it is: the engine retries
        the batch by the step's ``retry:``; any other error as a ``DataError``: the engine
        splits the batch to find the records at fault."""
        policy = self.context.policy
        if policy is not None and policy.is_transient(exc):
            return exc
        return DataError(f"{type(exc).__name__}: {exc}")

    # -- the Step contract ----------------------------------------------------------------
    def process(self, batch: Batch) -> StepOutput:
        if self.options.mode == "batch":
            return self._batch_output(batch, self._call_batch(batch))
        return self._records_in_chunks(batch)

    async def process_async(self, batch: Batch) -> StepOutput:
        if not self._async:
            return self.process(batch)
        if self.options.mode == "batch":
            try:
                result = await self.function(self._batch_input(batch))
            except Exception as exc:
                raise self._batch_failure(exc) from exc
            return self._batch_output(batch, result)
        return self._collect(batch, await self._per_record_async(batch.to_rows()))
