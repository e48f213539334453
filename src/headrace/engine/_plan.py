"""From a loaded pipeline file to plugin instances with validated options."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from headrace.config import POLICY_KEYS, LoadedPipeline, Loc, PluginSpec, validation_error
from headrace.errors import ConfigValueError, ExpressionError, HeadraceError
from headrace.plugin import Plugin, PluginContext, RunServices, Sink, Source, Step, load_plugin

from ._resilience import StepPolicy


@dataclass
class PlannedStep:
    step: Step
    spec: PluginSpec
    executor: str
    policy: StepPolicy

    @property
    def id(self) -> str:
        return self.step.context.plugin_id


@dataclass
class Plan:
    """Everything a run needs, checked: the source, the steps in order, the sink."""

    pipeline: LoadedPipeline
    source: Source
    steps: list[PlannedStep]
    sink: Sink
    #: Shared by every plugin's context: metrics, stop flag, HTTP session, scratch root.
    services: RunServices

    @property
    def name(self) -> str:
        return self.pipeline.config.name


def _unique_ids(specs: list[PluginSpec]) -> list[str]:
    ids: list[str] = []
    explicit = {s.id for s in specs if s.id}
    for spec in specs:
        if spec.id:
            ids.append(spec.id)
            continue
        base = spec.use.rsplit(":", 1)[-1].rsplit(".", 1)[-1].lower()
        candidate, n = base, 1
        while candidate in ids or candidate in explicit:
            n += 1
            candidate = f"{base}_{n}"
        ids.append(candidate)
    return ids


def _instantiate(  # noqa: PLR0917 - one call site per kind
    kind: str, spec: PluginSpec, plugin_id: str, path: Loc, loaded: LoadedPipeline,
    services: RunServices,
) -> Plugin:
    where = loaded.locations.where((*path, "use"))
    try:
        cls = load_plugin(kind, spec.use)
    except HeadraceError as exc:
        exc.message = f"{where}: {exc.message}"
        raise
    try:
        options = cls.Options.model_validate(spec.options)
    except ValidationError as exc:
        known = set(cls.Options.model_fields) | ({"id", "use"} if kind != "step" else set())
        raise validation_error(
            exc, loaded.locations, prefix=path, known_keys=known, what=f"{kind} '{plugin_id}'"
        ) from None
    policy = None
    if kind == "step" or cls.applies_policy:
        policy = StepPolicy(plugin_id, spec.policies(loaded.config.runtime),
                            transient=getattr(cls, "transient_errors", ()))
    else:
        given = [key for key in POLICY_KEYS if key in spec.model_fields_set]
        if given:
            raise ConfigValueError(
                f"{loaded.locations.where((*path, given[0]))}: {kind} '{plugin_id}' takes no "
                f"{given[0]}: policies apply to steps, and to sources and sinks that call "
                "out (http, download)")
    context = PluginContext(
        plugin_id=plugin_id,
        base_dir=loaded.base_dir,
        pipeline_name=loaded.config.name,
        locations=loaded.locations,
        config_path=path,
        policy=policy,
        services=services,
    )
    try:
        return cls(options, context)
    except HeadraceError as exc:
        # A message that already names where the value came from keeps that origin.
        if not exc.message.startswith((str(loaded.locations.file), "env ", "user config ",
                                       "--set")):
            exc.message = f"{loaded.locations.where(path)}: {exc.message}"
        raise


def build_plan(loaded: LoadedPipeline) -> Plan:
    """Resolve and validate every plugin; raises ``ConfigError`` naming file:line."""
    config = loaded.config
    # A python step's module is importable relative to the pipeline file's folder.
    base = str(loaded.base_dir)
    if base not in sys.path:
        sys.path.insert(0, base)
    services = RunServices()
    source = _instantiate("source", config.source, config.source.id or config.source.use,
                          ("source",), loaded, services)
    steps: list[PlannedStep] = []
    for index, (spec, step_id) in enumerate(zip(config.steps, _unique_ids(config.steps),
                                                 strict=True)):
        step = _instantiate("step", spec, step_id, ("steps", index), loaded, services)
        assert isinstance(step, Step)
        executor = spec.executor or ("async" if step.is_async else step.default_executor)
        if executor not in step.supported_executors:
            allowed = ", ".join(sorted(step.supported_executors))
            raise ConfigValueError(
                f"{loaded.locations.where(('steps', index, 'executor'))}: step '{step_id}' "
                f"cannot run with executor '{executor}' (allowed: {allowed})"
            )
        if (step.regroups or step.stateful) and (spec.concurrency > 1 or executor == "process"):
            raise ConfigValueError(
                f"{loaded.locations.where(('steps', index))}: step '{step_id}' keeps state "
                "across batches: it runs one batch at a time, in this process (concurrency: 1, "
                "executor: thread or async)")
        policy = step.context.policy
        assert isinstance(policy, StepPolicy)
        if (step.regroups or step.stateful) and policy.policies.timeout is not None:
            _no_timeout_on_state(loaded, index, step_id, spec, policy)
        steps.append(PlannedStep(step=step, spec=spec, executor=executor, policy=policy))
    sink = _instantiate("sink", config.sink, config.sink.id or config.sink.use, ("sink",),
                        loaded, services)
    assert isinstance(source, Source) and isinstance(sink, Sink)
    return Plan(pipeline=loaded, source=source, steps=steps, sink=sink, services=services)


def _no_timeout_on_state(loaded: LoadedPipeline, index: int, step_id: str, spec: PluginSpec,
                         policy: StepPolicy) -> None:
    """A step that keeps state must see one call at a time, always: a timed-out call of a
    worker thread cannot be stopped and would change the state beside its retry. Refused
    when the step sets ``timeout``; ``runtime.timeout`` (a default) does not reach it."""
    if "timeout" in spec.model_fields_set:
        raise ConfigValueError(
            f"{loaded.locations.where(('steps', index, 'timeout'))}: step '{step_id}' keeps "
            "state across batches and takes no timeout: a call that timed out would go on "
            "changing that state beside its retry",
            hint="remove timeout from this step (runtime.timeout does not apply to it)")
    policy.policies = policy.policies.model_copy(update={"timeout": None})


def check_schemas(plan: Plan) -> list[tuple[str, Any]]:
    """Compile every step against the source's schema, when the source can tell it cheaply.

    Returns ``(step id, output schema)`` pairs; raises ``ExpressionError`` with file:line.
    """
    schema: pa.Schema | None = plan.source.peek_schema()
    results: list[tuple[str, Any]] = []
    for index, planned in enumerate(plan.steps):
        if schema is None:
            break
        try:
            schema = planned.step.output_schema(schema)
        except ExpressionError as exc:
            where = plan.pipeline.locations.where(("steps", index))
            raise ExpressionError(f"{where}: step '{planned.id}': {exc.message}") from None
        results.append((planned.id, schema))
    return results
