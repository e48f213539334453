"""The conformance suite: does a plugin keep the contract it declares?

``check_plugin`` runs every check that applies to the plugin's kind, each on its own event
loop with fresh instances, and returns a report. A check that cannot run (no options to
build the plugin with, a capability not declared, no way to read the output) is skipped,
saying why.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError

from headrace.config import parse_scalar
from headrace.errors import ConfigValueError, PluginNotFoundError
from headrace.plugin import GROUPS, Plugin, Sink, Source, Step, load_plugin

from . import _sink_checks, _source_checks, _step_checks
from ._harness import (
    DEFAULT_TIMEOUT,
    SAMPLE_RECORDS,
    CheckFailed,
    CheckSkipped,
    Subject,
    Trial,
    describe,
    unwrap,
)
from ._report import CheckResult, ConformanceReport

Check = Callable[[Trial], Awaitable[str]]
ReadOutput = Callable[[dict[str, Any]], list[dict[str, Any]]]
BASES: dict[str, type[Plugin]] = {"source": Source, "step": Step, "sink": Sink}
CHECKS: dict[str, list[tuple[str, Check]]] = {
    "source": [
        ("lifecycle", _source_checks.lifecycle),
        ("source-batches", _source_checks.batches),
        ("resumable", _source_checks.resumable),
    ],
    "step": [
        ("lifecycle", _step_checks.lifecycle),
        ("step", _step_checks.accounting),
        ("thread-safe", _step_checks.thread_safe),
    ],
    "sink": [
        ("lifecycle", _sink_checks.lifecycle),
        ("atomic", _sink_checks.atomic),
        ("resumable", _sink_checks.resumable),
        ("idempotent", _sink_checks.idempotent),
    ],
}


def _class_problems(kind: str, cls: type[Plugin], options: dict[str, Any] | None
                    ) -> list[str]:
    """What is wrong with the class itself: contract, summary, options model, example."""
    problems: list[str] = []
    if not (cls.summary and isinstance(cls.summary, str)):
        problems.append("no `summary` (one line for `plugins list`)")
    model = cls.Options
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return [*problems, "`Options` is not a pydantic model"]
    if model.model_config.get("extra") != "forbid":
        problems.append("`Options` accepts unknown keys: derive it from headrace.plugin.Options "
                        "(extra='forbid'), so a typo in a pipeline file is an error")
    try:
        model.model_json_schema()
    except Exception as exc:
        problems.append(f"`Options.model_json_schema()` raised {describe(exc)}")
    bare = [name for name, info in model.model_fields.items() if not info.description]
    if bare:
        problems.append(f"options without a description (Field(description=...)), which "
                        f"`plugins show` lists: {', '.join(bare)}")
    if cls.example is not None:
        try:
            model.model_validate(cls.example)
        except ValidationError as exc:
            problems.append(f"`example` does not validate: {str(exc).splitlines()[0]} ...")
    if kind == "step":
        step: Any = cls
        if step.batch_format not in ("arrow", "rows"):
            problems.append(f"batch_format {step.batch_format!r} is neither arrow nor rows")
        if step.default_executor not in step.supported_executors:
            problems.append(f"default_executor {step.default_executor!r} is not among "
                            f"supported_executors")
    return problems


def _run_check(subject: Subject, name: str, check: Check) -> CheckResult:
    async def main() -> str:
        trial = Trial(subject)
        try:
            return await check(trial)
        finally:
            await trial.finish()

    try:
        detail = anyio.run(main, backend="asyncio")
    except Exception as exc:  # every failure of the plugin is a result
        found = unwrap(exc)
        if isinstance(found, CheckSkipped):
            return CheckResult(name, "skipped", str(found))
        if isinstance(found, CheckFailed):
            return CheckResult(name, "failed", str(found))
        return CheckResult(name, "failed", f"raised {describe(found)}")
    return CheckResult(name, "passed", detail)


def _load(kind: str, name: str | type[Plugin]) -> tuple[str, type[Plugin]]:
    if kind not in BASES:
        raise ValueError(f"kind must be one of {', '.join(BASES)}, not {kind!r}")
    if isinstance(name, str):
        return name, load_plugin(kind, name)
    return f"{name.__module__}:{name.__qualname__}", name


def check_plugin(
    kind: str,
    name: str | type[Plugin],
    *,
    options: dict[str, Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    read_output: ReadOutput | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ConformanceReport:
    """Run the conformance checks on a plugin and report each one.

    ``kind`` is "source", "step" or "sink"; ``name`` an installed plugin's name, a
    ``module:Class`` path, or the class itself. ``options`` default to the class's
    ``example`` (or to no options, when it needs none). ``records`` are the input written to
    a sink or processed by a step (default: ``SAMPLE_RECORDS``). ``read_output(options)``
    returns what a sink wrote, as records: it lets the atomic, resumable and idempotent
    checks look at the output (without it the atomic checks compare the file under the
    ``path`` option, and the idempotent check is skipped). Relative paths in the options
    are relative to ``base_dir`` (default: the current folder). Every call of the plugin
    must return within ``timeout`` seconds. Call it from synchronous code: each check runs
    its own event loop.
    """
    label, cls = _load(kind, name)
    report = ConformanceReport(kind=kind, plugin=label)
    if not (isinstance(cls, type) and issubclass(cls, BASES[kind])):
        report.results.append(CheckResult("class", "failed",
                                          f"not a subclass of {BASES[kind].__name__}"))
        report.results.extend(CheckResult(n, "skipped", "not a " + BASES[kind].__name__)
                              for n, _ in CHECKS[kind])
        return report
    if options is None:
        options = cls.example
    if options is None:
        try:
            cls.Options.model_validate({})
            options = {}
        except ValidationError:
            options = None  # every check that builds an instance says NEEDS_OPTIONS
    problems = _class_problems(kind, cls, options)
    report.results.append(
        CheckResult("class", "failed", "; ".join(problems)) if problems
        else CheckResult("class", "passed", f"{len(cls.Options.model_fields)} option(s), "
                         f"all described{'' if cls.example is not None else '; no example'}"))
    subject = Subject(kind=kind, cls=cls, label=label, options=options,
                      records=list(SAMPLE_RECORDS if records is None else records),
                      read_output=read_output,
                      base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
                      timeout=timeout)
    for check_name, check in CHECKS[kind]:
        report.results.append(_run_check(subject, check_name, check))
    return report


def assert_conforms(
    kind: str,
    name: str | type[Plugin],
    *,
    options: dict[str, Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    read_output: ReadOutput | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ConformanceReport:
    """``check_plugin``, raising ``AssertionError`` with the report when a check failed."""
    report = check_plugin(kind, name, options=options, records=records,
                          read_output=read_output, base_dir=base_dir, timeout=timeout)
    report.assert_ok()
    return report


def parse_settings(settings: Sequence[str]) -> dict[str, Any]:
    """``["path=data.csv", "header=false"]`` (``--set`` syntax) as options; dotted keys nest."""
    options: dict[str, Any] = {}
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep or not key.strip():
            raise ConfigValueError(f"--set {setting!r}: expected option=value",
                                   hint="e.g. --set path=data.csv")
        *parents, last = key.strip().split(".")
        target = options
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = parse_scalar(raw)
    return options


def _kind_of(name: str) -> str:
    kinds = []
    for kind in GROUPS:
        try:
            load_plugin(kind, name)
        except PluginNotFoundError:
            continue
        kinds.append(kind)
    if not kinds:
        load_plugin("source", name)  # raises the not-found error with its hint
    if len(kinds) > 1:
        named = ", a ".join(kinds[:-1]) + f" and a {kinds[-1]}"
        raise ConfigValueError(f"'{name}' names a {named} plugin",
                               hint=f"choose one with --kind {'|'.join(kinds)}")
    return kinds[0]


def check_installed(kind: str | None, name: str,
                    options: Mapping[str, Any] | None = None) -> ConformanceReport:
    """``headrace plugins check NAME``: the conformance suite on an installed plugin.

    ``kind`` may be None when the name belongs to one kind only. ``options`` (e.g. from
    ``parse_settings(--set values)``) default to the plugin's ``example``. Sources and steps
    run in the current folder (relative input paths work); a sink writes into a temporary
    folder, removed afterwards, unless its options give an absolute path.
    """
    resolved = kind or _kind_of(name)
    given = dict(options) if options else None
    if resolved != "sink":
        return check_plugin(resolved, name, options=given)
    with tempfile.TemporaryDirectory(prefix="headrace-check-") as folder:
        return check_plugin(resolved, name, options=given, base_dir=folder)

