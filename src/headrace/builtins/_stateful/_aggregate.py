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
from ._metrics import Partial, output_type, parse_metric, partials_of
from ._sketch import SENTINEL, bucket_keys, float_values, fsum_chunks, fsum_values, quantiles

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
    example = {"group_by": ["active"],
               "metrics": {"n": "count(*)", "mean_score": "mean(score)",
                           "p95_score": "approx_quantile(score, 0.95)"}}
    Options: ClassVar[type[AggregateOptions]] = AggregateOptions
    options: AggregateOptions
    regroups = True
    thread_safe = False

    def __init__(self, options: AggregateOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.metrics = [parse_metric(name, text) for name, text in options.metrics.items()]
        self.keys = [f"k{i}" for i in range(max(1, len(options.group_by)))]
        self.partials: list[Partial] = []  # in the main table, as p0, p1, ...
        self.sides: list[tuple[str, str]] = []  # side tables: ("fsum" | "quantile", column)
        self.uses: dict[str, list[int]] = {}  # metric -> its partials' (main) indices
        self.side_of: dict[str, int] = {}  # metric -> its side table
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
        sides: dict[tuple[str, str], int] = {}
        for metric in self.metrics:
            uses = self.uses.setdefault(metric.name, [])
            if metric.function == "approx_quantile":
                assert metric.column is not None
                self.side_of[metric.name] = sides.setdefault(("quantile", metric.column),
                                                             len(sides))
            for partial in partials_of(metric, schema):
                if partial.function == "fsum":
                    assert partial.column is not None
                    self.side_of[metric.name] = sides.setdefault(("fsum", partial.column),
                                                                 len(sides))
                else:
                    uses.append(index.setdefault(partial, len(index)))
        self.partials = list(index)
        self.sides = list(sides)
        self.key_types = [_plain(schema.field(name).type) for name in self.options.group_by]
        self.state = GroupState(self.keys, [p.merge for p in self.partials], len(self.sides),
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
        sides = [self._side(kind, table.column(column), work, main)
                 for kind, column in self.sides]
        self.state.add(main, sides)
        self.seen += table.num_rows
        if self.state.nbytes > self.options.memory_budget:
            self.state.spill()
            self.context.emit("aggregate_spills")
        return StepOutput(batch=batch.slice(0, 0), released=False)

    def _side(self, kind: str, column: pa.ChunkedArray, work: pa.Table,
              main: pa.Table) -> pa.Table:
        """The batch's side-table rows: a quantile sketch or exact float-sum limbs."""
        values, usable = float_values(column)
        rows = np.flatnonzero(usable)
        if kind == "quantile":
            b = bucket_keys(values[rows], self.options.quantile_accuracy)
            n = np.ones(len(rows), dtype=np.int64)
        else:
            index, b, n = fsum_chunks(values[rows])
            rows = rows[index]
        points = work.select(self.keys).take(pa.array(rows, pa.int64()))
        points = points.append_column("b", pa.array(b, pa.int64())).append_column(
            "n", pa.array(n, pa.int64()))
        summed = points.group_by([*self.keys, "b"], use_threads=False).aggregate(
            [("n", "sum")])
        side = pa.table([*(summed.column(k) for k in [*self.keys, "b"]),
                         summed.column("n_sum")], names=[*self.keys, "b", "n"])
        groups = main.num_rows  # one sentinel row a group: the groups line up at the end
        sentinels = main.select(self.keys).append_column(
            "b", pa.array(np.full(groups, SENTINEL, dtype=np.int64))).append_column(
            "n", pa.array(np.zeros(groups, dtype=np.int64)))
        return pa.concat_tables([sentinels, side])

    # -- the end --------------------------------------------------------------------------

    async def flush(self) -> StepOutput | None:
        import anyio

        return await anyio.to_thread.run_sync(self._finish)

    def _finish(self) -> StepOutput | None:
        if self.state is None:
            return None
        order = [(k, "ascending") for k in self.keys]  # nulls last: sort_by's default
        parts = [self._finalize(main.sort_by(order),
                                [s.sort_by([*order, ("b", "ascending")]) for s in sides])
                 for main, sides in self.state.merged()]
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

    def _finalize(self, main: pa.Table, sides: list[pa.Table]) -> pa.Table:
        import pyarrow.compute as pc

        columns = [main.column(k) for k in self.keys]
        for metric in self.metrics:
            uses = [main.column(f"p{i}") for i in self.uses[metric.name]]
            side = sides[self.side_of[metric.name]] if metric.name in self.side_of else None
            if metric.function in ("sum", "mean") and side is not None:  # a float column
                count = uses[0].to_numpy()
                total = fsum_values(side.column("b").to_numpy(), side.column("n").to_numpy())
                value = total / np.maximum(count, 1) if metric.function == "mean" else total
                columns.append(pa.array(value, pa.float64(), mask=count == 0))
            elif metric.function == "mean":
                total = pc.cast(uses[1], pa.float64())
                columns.append(pc.divide(total, pc.cast(uses[0], pa.float64())))
            elif metric.function == "approx_quantile":
                assert side is not None and metric.quantile is not None
                values, has = quantiles(side.column("b").to_numpy(), side.column("n").to_numpy(),
                                        metric.quantile, self.options.quantile_accuracy)
                columns.append(pa.array(values, pa.float64(), mask=~has))
            elif metric.function == "sum":
                columns.append(uses[1])
            else:
                columns.append(uses[0])
        return pa.table(columns, names=[*self.keys, *(m.name for m in self.metrics)])


def _plain(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _mkdir(path: Any) -> Any:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _all_dead(batch: Batch, error: str, message: str) -> StepOutput:
    dead = [DeadRecord(record, error, message, batch.row_id(i))
            for i, record in enumerate(batch.to_rows())]
    return StepOutput(batch=batch.slice(0, 0), dead=dead, released=False)
