"""The ``aggregate`` step: metrics per group, emitted after the last batch.

Each batch is folded into partial states per group by Arrow's hash group-by (vectorised),
the partials are merged as they pile up, and the merged state is spilled to the scratch
folder by hash partition when it outgrows ``memory_budget``; after the last batch the
partitions are merged one at a time and the groups come out sorted by the group columns
(nulls last). The step holds every record until then, so the engine keeps no checkpoint
past the start of the input: a resumed run reads it again from the beginning.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import AfterValidator, Field, model_validator

from headrace.config import ByteSize
from headrace.plugin import Batch, DeadRecord, Options, PluginContext, Step, StepOutput

from ._groups import GroupState
from ._keys import check_key_columns
from ._metrics import Metric, Partial, output_type, parse_metric, partials_of
from ._sketch import SENTINEL, bucket_keys, float_values, quantiles

_OUT_ROWS = 65_536  # rows an output batch holds


def _check_metric(text: str) -> str:
    parse_metric("metric", text)
    return text


class AggregateOptions(Options):
    group_by: list[str] = Field(
        default_factory=list, description="The columns whose values make a group; none: "
        "one group of every record.")
    metrics: dict[str, Annotated[str, AfterValidator(_check_metric)]] = Field(
        min_length=1, description="Output column -> count(*), count(col), sum(col), "
        "mean(col), min(col), max(col) or approx_quantile(col, q).")
    memory_budget: ByteSize = Field(
        default=256 * 1024**2, gt=0,
        description="Bytes of group state held in memory; beyond it partials are spilled to "
        "the scratch folder and merged at the end.")
    quantile_accuracy: float = Field(
        default=0.01, ge=0.0005, le=0.1,
        description="approx_quantile's relative error bound (0.01: within 1% of the exact "
        "value).")

    @model_validator(mode="after")
    def _names(self) -> AggregateOptions:
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by names a column twice")
        clash = sorted(set(self.group_by) & set(self.metrics))
        if clash:
            raise ValueError(f"metric {clash[0]!r} has the name of a group_by column")
        return self


class AggregateStep(Step):
    """count/sum/mean/min/max/approx_quantile per group, streaming, with spilling."""

    summary = "metrics per group (count, sum, mean, min, max, approx_quantile)"
    example = {"group_by": ["carrier"],
               "metrics": {"flights": "count(*)", "avg_delay": "mean(dep_delay)",
                           "p95_delay": "approx_quantile(dep_delay, 0.95)"}}
    Options: ClassVar[type[AggregateOptions]] = AggregateOptions
    options: AggregateOptions
    regroups = True
    thread_safe = False

    def __init__(self, options: AggregateOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.metrics = [parse_metric(name, text) for name, text in options.metrics.items()]
        self.keys = [f"k{i}" for i in range(max(1, len(options.group_by)))]
        self.sketch_columns = sorted({m.column for m in self.metrics
                                      if m.function == "approx_quantile" and m.column})
        self.partials: list[Partial] = []
        self.uses: dict[str, list[int]] = {}  # metric name -> its partials' indices
        self.key_types: list[pa.DataType] = []
        self.seen = 0
        self.state: GroupState | None = None

    # -- checks ---------------------------------------------------------------------------

    def output_schema(self, schema: pa.Schema) -> pa.Schema | None:
        if not schema.names:  # nothing to check against (an empty input)
            return None
        check_key_columns(schema, self.options.group_by, "group_by")
        fields = [schema.field(name) for name in self.options.group_by]
        fields = [pa.field(f.name, _plain(f.type)) for f in fields]
        fields += [pa.field(m.name, output_type(m, schema)) for m in self.metrics]
        return pa.schema(fields)

    def input_columns(
        self, needed: frozenset[str] | None, available: list[str]
    ) -> frozenset[str] | None:
        return frozenset(self.options.group_by) | {m.column for m in self.metrics if m.column}

    # -- folding --------------------------------------------------------------------------

    def _setup(self, schema: pa.Schema) -> None:
        self.output_schema(schema)  # the first batch's columns decide the types
        index: dict[Partial, int] = {}
        for metric in self.metrics:
            uses = self.uses.setdefault(metric.name, [])
            for partial in partials_of(metric, schema):
                uses.append(index.setdefault(partial, len(index)))
        self.partials = list(index)
        self.key_types = [_plain(schema.field(name).type) for name in self.options.group_by]
        self.state = GroupState(self.keys, [p.merge for p in self.partials],
                                len(self.sketch_columns),
                                lambda: _mkdir(self.context.scratch_dir / "spill"))

    def _work(self, table: pa.Table) -> pa.Table:
        """Keys as ``k<i>`` and partial inputs as ``v<i>``, in the first batch's types."""
        columns: dict[str, Any] = {}
        if self.options.group_by:
            for key, name, kind in zip(self.keys, self.options.group_by, self.key_types,
                                       strict=True):
                columns[key] = table.column(name).cast(kind)
        else:
            columns["k0"] = pa.array(np.zeros(table.num_rows, dtype=np.int8))
        for i, partial in enumerate(self.partials):
            if partial.column is not None:
                column = table.column(partial.column)
                if pa.types.is_dictionary(column.type):
                    column = column.cast(column.type.value_type)
                columns[f"v{i}"] = column.cast(partial.cast) if partial.cast else column
        return pa.table(columns)

    def process(self, batch: Batch) -> StepOutput:
        table = batch.to_arrow()
        wanted = self.input_columns(None, [])
        missing = sorted(c for c in wanted if c not in table.column_names) if wanted else []
        if missing:
            return _all_dead(batch, "MissingColumn", f"no column {missing[0]!r} in this record")
        if self.state is None:
            self._setup(table.schema)
        assert self.state is not None
        try:
            work = self._work(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            return _all_dead(batch, "TypeMismatch",
                             f"a column does not convert to its type in earlier batches: {exc}")
        aggregates: list[tuple[Any, str]] = [
            ([], "count_all") if p.function == "count_all" else (f"v{i}", p.function)
            for i, p in enumerate(self.partials)]
        grouped = work.group_by(self.keys, use_threads=False).aggregate(aggregates)
        main = pa.table(
            [*(grouped.column(k) for k in self.keys),
             *(grouped.column("count_all" if p.function == "count_all" else f"v{i}_{p.function}")
               for i, p in enumerate(self.partials))],
            names=[*self.keys, *(f"p{i}" for i in range(len(self.partials)))])
        sketches = [self._sketch(table, work, main, column) for column in self.sketch_columns]
        self.state.add(main, sketches)
        self.seen += table.num_rows
        if self.state.nbytes > self.options.memory_budget:
            self.state.spill()
            self.context.emit("aggregate_spills")
        return StepOutput(batch=batch.slice(0, 0), released=False)

    def _sketch(self, table: pa.Table, work: pa.Table, main: pa.Table, column: str) -> pa.Table:
        values, usable = float_values(table.column(column))
        rows = np.flatnonzero(usable)
        buckets = bucket_keys(values[rows], self.options.quantile_accuracy)
        points = work.select(self.keys).take(pa.array(rows)).append_column(
            "b", pa.array(buckets, pa.int64()))
        counted = points.group_by([*self.keys, "b"], use_threads=False).aggregate(
            [([], "count_all")])
        sketch = pa.table([*(counted.column(k) for k in [*self.keys, "b"]),
                           counted.column("count_all")], names=[*self.keys, "b", "n"])
        groups = main.num_rows  # one sentinel row a group: the groups line up at the end
        sentinels = main.select(self.keys).append_column(
            "b", pa.array(np.full(groups, SENTINEL, dtype=np.int64))).append_column(
            "n", pa.array(np.zeros(groups, dtype=np.int64)))
        return pa.concat_tables([sentinels, sketch])

    # -- the end --------------------------------------------------------------------------

    async def flush(self) -> StepOutput | None:
        import anyio

        return await anyio.to_thread.run_sync(self._finish)

    def _finish(self) -> StepOutput | None:
        if self.state is None:
            return None
        order = [(k, "ascending") for k in self.keys]  # nulls last: sort_by's default
        parts = [self._finalize(main.sort_by(order),
                                [s.sort_by([*order, ("b", "ascending")]) for s in sketches])
                 for main, sketches in self.state.merged()]
        if not parts:
            return StepOutput(batch=Batch.from_rows([]), filtered=self.seen)
        result = pa.concat_tables(parts)
        if len(parts) > 1:
            result = result.sort_by(order)
        if not self.options.group_by:
            result = result.drop_columns(["k0"])
        result = result.rename_columns([*self.options.group_by, *(m.name for m in self.metrics)])
        outs = [Batch.from_arrow(result.slice(start, _OUT_ROWS))
                for start in range(0, result.num_rows, _OUT_ROWS)]
        return StepOutput(batch=outs[0], more=outs[1:], filtered=self.seen - result.num_rows)

    def _finalize(self, main: pa.Table, sketches: list[pa.Table]) -> pa.Table:
        import pyarrow.compute as pc

        columns = [main.column(k) for k in self.keys]
        for metric in self.metrics:
            uses = [main.column(f"p{i}") for i in self.uses[metric.name]]
            if metric.function == "mean":
                columns.append(pc.divide(uses[0], pc.cast(uses[1], pa.float64())))
            elif metric.function == "approx_quantile":
                columns.append(self._quantile(metric, sketches, main.num_rows))
            else:
                columns.append(uses[0])
        return pa.table(columns, names=[*self.keys, *(m.name for m in self.metrics)])

    def _quantile(self, metric: Metric, sketches: list[pa.Table], groups: int) -> pa.Array:
        sketch = sketches[self.sketch_columns.index(metric.column or "")]
        buckets = sketch.column("b").to_numpy()
        counts = sketch.column("n").to_numpy()
        assert metric.quantile is not None
        values, has = quantiles(buckets, counts, metric.quantile,
                                self.options.quantile_accuracy)
        assert len(values) == groups, "sketch groups out of line"
        return pa.array(values, pa.float64(), mask=~has)


def _plain(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _mkdir(path: Any) -> Any:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _all_dead(batch: Batch, error: str, message: str) -> StepOutput:
    dead = [DeadRecord(record, error, message, batch.row_id(i))
            for i, record in enumerate(batch.to_rows())]
    return StepOutput(batch=batch.slice(0, 0), dead=dead, released=False)
