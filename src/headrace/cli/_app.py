"""The ``headrace`` command. Exit codes are decided here, and only here:
0 ok, 1 run failed or too many dead letters, 2 usage/config error, 130/143 interrupted."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from headrace._version import __version__
from headrace.cli._config_cmd import config_app
from headrace.cli._infer_cmd import infer_command
from headrace.cli._logging import LogFormat, setup_logging
from headrace.cli._plugins_cmd import plugins_app
from headrace.errors import HeadraceError


class _GlobalOptionsGroup(TyperGroup):
    """The root group: every command and sub-group under it also accepts the global options
    (``headrace run p.yaml -q``), so they work before and after the command."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        holder = typer.Typer(add_completion=False)
        holder.command()(_global_options)
        options = typer.main.get_command(holder).params
        for command in self.commands.values():
            _add_global_options(command, options)


app = typer.Typer(
    name="headrace",
    cls=_GlobalOptionsGroup,
    help="Run data pipelines: stream records from sources through steps into sinks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(plugins_app, name="plugins")
dlq_app = typer.Typer(help="Inspect dead-letter files.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(config_app, name="config")
app.command("infer")(infer_command)


class State:
    debug = False
    verbosity = 0  # -1 with -q, else the number of -v
    # What the global options said so far, before and after the command.
    verbose = 0
    quiet = False
    log_format = LogFormat.text


def _apply_options() -> None:
    """Logging as the global options given so far say: -q wins over -v; -v INFO, -vv DEBUG."""
    State.verbosity = -1 if State.quiet else State.verbose
    level = (logging.ERROR if State.quiet else logging.DEBUG if State.verbose > 1
             else logging.INFO if State.verbose else logging.WARNING)
    setup_logging(State.log_format, level)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False)


def _versions() -> str:
    parts = [f"headrace {__version__}", f"Python {platform.python_version()}"]
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("pyarrow", "duckdb", "pydantic", "anyio", "typer", "uvloop"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return "\n".join(parts)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(_versions())
        raise typer.Exit(0)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More logs.")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors.")] = False,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="HEADRACE_LOG_FORMAT", help="Logs on stderr as text or JSON lines."
    )] = LogFormat.text,
    version: Annotated[bool, typer.Option("--version", callback=_version_callback,
                                          is_eager=True, help="Versions and exit.")] = False,
) -> None:
    State.debug, State.verbose, State.quiet, State.log_format = debug, verbose, quiet, log_format
    _apply_options()


# The same options after the command: each one adds to what came before it (-v then -v is
# -vv; --log-format given after the command wins). Parsed by the command, after main_options.
def _debug_after(value: bool) -> None:
    State.debug = State.debug or value


def _verbose_after(value: int) -> None:
    if value:
        State.verbose += value
        _apply_options()


def _quiet_after(value: bool) -> None:
    if value:
        State.quiet = True
        _apply_options()


def _log_format_after(value: LogFormat | None) -> None:
    if value is not None:
        State.log_format = value
        _apply_options()


_PANEL = "Global options (also before the command)"


def _global_options(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks.", callback=_debug_after, expose_value=False,
        rich_help_panel=_PANEL)] = False,
    verbose: Annotated[int, typer.Option(
        "-v", "--verbose", count=True, help="More logs.", callback=_verbose_after,
        expose_value=False, rich_help_panel=_PANEL)] = 0,
    quiet: Annotated[bool, typer.Option(
        "-q", "--quiet", help="Only errors.", callback=_quiet_after, expose_value=False,
        rich_help_panel=_PANEL)] = False,
    log_format: Annotated[LogFormat | None, typer.Option(
        "--log-format", help="Logs on stderr as text or JSON lines.",
        callback=_log_format_after, expose_value=False, show_default=False,
        rich_help_panel=_PANEL)] = None,
) -> None:
    """Only its parameters are used: the click options of the global options."""


def _add_global_options(command: Any, options: list[Any]) -> None:
    """Append ``options`` to ``command`` and, for a group, to every command under it."""
    taken = {name for param in command.params for name in param.opts}
    command.params.extend(o for o in options if not taken.intersection(o.opts))
    for sub in getattr(command, "commands", {}).values():
        _add_global_options(sub, options)


def _redact(data: Any) -> Any:
    """Secrets from ${VAR} hidden in text or JSON-like data about to be printed."""
    from headrace.config import redact_data

    return redact_data(data)


def _print_traceback(error: BaseException) -> None:
    print(_redact("".join(traceback.format_exception(error))), end="", file=sys.stderr)


def _load(pipeline: Path, overrides: list[str] | None) -> Any:
    from headrace.config import load_pipeline
    from headrace.engine import build_plan, check_schemas

    loaded = load_pipeline(pipeline, overrides or [])
    plan = build_plan(loaded)
    schemas = check_schemas(plan)
    return plan, schemas


PipelineArg = Annotated[Path, typer.Argument(help="Pipeline file (YAML or TOML).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: key.path=value.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


@app.command()
def run(  # noqa: PLR0917 - Typer maps each parameter to an option
    pipeline: PipelineArg,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the last interrupted run of this pipeline from its checkpoint."
    )] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show the plan.")]
    = False,
    drain_timeout: Annotated[float | None, typer.Option(
        "--drain-timeout", min=0.001, help="Seconds a Ctrl-C drain may take."
    )] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=0, max=65535,
        help="Serve Prometheus /metrics and /healthz on this port during the run (0: any)."
    )] = None,
    metrics_host: Annotated[str | None, typer.Option(
        "--metrics-host", help="Address for --metrics-port (default 127.0.0.1)."
    )] = None,
) -> None:
    """Run a pipeline."""
    from headrace.cli._progress import LineProgress, RichProgress
    from headrace.cli._render import summary_text
    from headrace.engine import run_plan

    overrides = list(set_ or [])
    if drain_timeout is not None:
        overrides.append(f"runtime.drain_timeout={drain_timeout}")
    plan, _ = _load(pipeline, overrides)
    if dry_run:
        _print_plan(plan, as_json)
        return
    observers: list[Any] = []
    if State.verbosity >= 0:
        if sys.stderr.isatty():
            observers.append(RichProgress(_stderr_console()))
        else:
            interval = plan.pipeline.config.runtime.progress_interval
            observers.append(LineProgress(sys.stderr, interval))
    kept, secret = _split_secret_overrides(list(set_ or []))
    _write_run_file(plan, "run.json", {"pipeline": str(pipeline.resolve()),
                                       "overrides": kept, "secret_overrides": secret})
    metrics = _start_metrics(plan, metrics_host, metrics_port)
    if metrics is not None:
        observers.append(metrics.observer)
    try:
        result = run_plan(plan, observers, resume=resume)
    finally:
        if metrics is not None:
            metrics.close()
    summary = _redact(result.summary)
    _write_run_file(plan, "summary.json", summary)
    if as_json:
        typer.echo(json.dumps(summary))
    if State.verbosity >= 0 or result.status != "ok":
        print(summary_text(summary, str(pipeline)), file=sys.stderr)
    if result.error is not None:
        if State.debug:
            _print_traceback(result.error)
        raise typer.Exit(result.error.exit_code)
    if result.interrupted_by:
        raise typer.Exit(143 if result.interrupted_by == "SIGTERM" else 130)
    raise typer.Exit(0 if result.status == "ok" else 1)


def _start_metrics(plan: Any, host: str | None, port: int | None) -> Any:
    """The metrics endpoint for --metrics-port, listening; it stops with the run."""
    from headrace.errors import ConfigError

    if port is None:
        if host is not None:
            raise ConfigError("--metrics-host needs --metrics-port", hint="--metrics-port 9464")
        return None
    from headrace.cli._metrics import MetricsObserver, MetricsServer

    server = MetricsServer(MetricsObserver(plan.name), host or "127.0.0.1", port)
    if State.verbosity >= 0:
        print(f"headrace: metrics on {server.url}", file=sys.stderr, flush=True)
    return server


def _split_secret_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--set`` values to keep in ``run.json``, and the keys of those that are secret (a
    key named like one, or a value holding a URL password or a known secret): nothing
    secret is written to the run directory."""
    from headrace.config import is_secret_name, redact, register_secret

    kept: list[str] = []
    secret: list[str] = []
    for override in overrides:
        key, _, value = override.partition("=")
        if is_secret_name(key.rsplit(".", 1)[-1]) or redact(value) != value:
            register_secret(value)  # hidden in logs and errors too
            secret.append(key)
        else:
            kept.append(override)
    return kept, secret


def _write_run_file(plan: Any, name: str, content: dict[str, Any]) -> None:
    """``summary.json`` or ``run.json`` (what ``headrace resume`` needs) in the run dir,
    which only its owner may read."""
    from headrace.engine import default_run_dir, private_dir

    config = plan.pipeline.config
    run_dir = default_run_dir(plan.pipeline.base_dir, config.name, config.runtime.run_dir)
    try:
        private_dir(run_dir)
        tmp = run_dir / f".{name}.tmp"
        tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(run_dir / name)
    except OSError as exc:
        print(_redact(f"headrace: warning: cannot write {run_dir / name}: {exc}"),
              file=sys.stderr)


def _print_plan(plan: Any, as_json: bool) -> None:
    description = _redact({
        "pipeline": plan.name,
        "source": plan.source.context.plugin_id,
        "steps": [{"id": s.id, "use": s.spec.use, "executor": s.executor,
                   "concurrency": s.spec.concurrency} for s in plan.steps],
        "sink": plan.sink.describe(),
    })
    if as_json:
        typer.echo(json.dumps(description))
        return
    print(f"pipeline {plan.name}: {description['source']} -> "
          + " -> ".join(f"{s['id']}[{s['executor']}x{s['concurrency']}]"
                        for s in description["steps"])
          + f" -> {description['sink']}", file=sys.stderr)


@app.command("resume")
def resume_command(
    run_ref: Annotated[Path, typer.Argument(
        metavar="RUN", help="A pipeline file, or its run directory (.headrace/runs/NAME)."
    )],
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue an interrupted run: same as `headrace run PIPELINE --resume` with the same
    --set values as the interrupted run (secret ones, never stored, given again with --set)."""
    from headrace.errors import ConfigFileError, ConfigValueError

    pipeline, overrides = run_ref, list(set_ or [])
    info_file = run_ref / "run.json" if run_ref.is_dir() else None
    if info_file is not None:
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ConfigFileError(f"{run_ref}: not a run directory (no readable run.json)",
                                  hint="give the pipeline file instead") from None
        given = {o.partition("=")[0] for o in overrides}
        missing = [k for k in info.get("secret_overrides", []) if k not in given]
        if missing:
            raise ConfigValueError(
                f"the interrupted run set {', '.join(missing)} on the command line; secret "
                "values are not stored in the run directory",
                hint=f"give it again: headrace resume {run_ref} --set {missing[0]}=..., or "
                "pass it as ${VAR} in the pipeline file")
        stored = [o for o in info.get("overrides", []) if o.partition("=")[0] not in given]
        pipeline, overrides = Path(info["pipeline"]), stored + overrides
    run(pipeline, set_=overrides, as_json=as_json, resume=True)


@app.command()
def validate(pipeline: PipelineArg, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Parse the pipeline, check every plugin's options, compile expressions."""
    try:
        plan, schemas = _load(pipeline, set_)
    except HeadraceError as exc:
        if not as_json:
            raise
        typer.echo(json.dumps({"valid": False, "error": _redact(exc.one_line())}))
        raise typer.Exit(exc.exit_code) from None
    checked = [sid for sid, _ in schemas]
    if as_json:
        typer.echo(json.dumps(_redact({"valid": True, "pipeline": plan.name,
                                       "steps": [s.id for s in plan.steps],
                                       "expressions_checked_against_data": checked})))
        return
    note = "" if len(checked) == len(plan.steps) else \
        " (the source's columns are unknown until it runs: expressions were parsed, not bound)"
    print(_redact(f"{pipeline}: ok: {plan.source.context.plugin_id} -> "
                  f"{len(plan.steps)} steps -> {plan.sink.describe()}{note}"), file=sys.stderr)


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder to write into.")] = Path(".")
         ) -> None:
    """Write a commented, runnable example pipeline and its data."""
    from headrace.cli._init import write_example

    written = write_example(directory)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    print(f"next: headrace run {written[0]}", file=sys.stderr)


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline files (for editors)."""
    from headrace.cli._schema import pipeline_json_schema

    typer.echo(json.dumps(pipeline_json_schema(), indent=2))


@dlq_app.command("show")
def dlq_show(
    path: Annotated[Path, typer.Argument(help="A dead-letter JSONL file.")],
    samples: Annotated[int, typer.Option(min=0, max=100, help="Samples per group.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Count dead letters by step and error, with samples."""
    from headrace.engine import summarize_dead_letters
    from headrace.errors import ConfigFileError

    if not path.is_file():
        raise ConfigFileError(f"{path}: no such dead-letter file")
    summary = summarize_dead_letters(path, samples)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(f"{summary['total']:,} dead letters in {path}"
               + (f" ({summary['unreadable']:,} unreadable lines)" if summary["unreadable"]
                  else ""))
    for group in summary["groups"]:
        typer.echo(f"  {group['count']:>9,}  {group['step']}  {group['error']}")
        for sample in group["samples"]:
            where = sample.get("position") or {}
            at = where.get("line", where.get("row", "?"))
            message = str(sample.get("message") or "").replace("\n", " ")[:160]
            typer.echo(f"             at {at}: {message}")


@dlq_app.command("replay")
def dlq_replay(
    path: Annotated[Path, typer.Argument(help="A dead-letter JSONL file.")],
    pipeline: Annotated[Path, typer.Option("--pipeline", "-p", help="The pipeline file.")],
    step: Annotated[str | None, typer.Option(help="Only the records that failed here.")]
    = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run dead-lettered records from the step where they failed, with the pipeline's
    current config. Output goes to the sink path with `.replay` before its extension (and
    dead letters again to `<file>.replay.jsonl`) unless --set sink.path=... says otherwise."""
    from headrace.cli._render import summary_text
    from headrace.engine import replay_plan, run_plan
    from headrace.errors import ConfigFileError

    if not path.is_file():
        raise ConfigFileError(f"{path}: no such dead-letter file")
    overrides = list(set_ or [])
    plan, _ = _load(pipeline, overrides)
    sink_path = getattr(plan.sink.options, "path", None)
    if sink_path and sink_path != "-" and not any(o.startswith("sink.path=") for o in overrides):
        final = plan.sink.context.resolve_path(sink_path)
        overrides.append(f"sink.path={final.with_name(final.stem + '.replay' + final.suffix)}")
    if not any(o.startswith("dead_letter.path=") for o in overrides):
        overrides.append(f"dead_letter.path={path.resolve().with_suffix('.replay.jsonl')}")
    plan, _ = _load(pipeline, overrides)
    replay = replay_plan(plan, path, step)
    for reason, count in replay.skipped.items():
        print(f"headrace: {count:,} dead letters not replayed: {reason}", file=sys.stderr)
    result = run_plan(replay.plan, [])
    summary = _redact({**result.summary, "replayed": replay.replayable,
                       "not_replayed": replay.skipped})
    if as_json:
        typer.echo(json.dumps(summary))
    print(summary_text(summary), file=sys.stderr)
    if result.error is not None:
        raise typer.Exit(result.error.exit_code)
    raise typer.Exit(0 if result.status == "ok" else 1)


@app.command("demo-api")
def demo_api(  # noqa: PLR0917 - Typer maps each parameter to an option
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8080,
    items: Annotated[int, typer.Option(min=0, help="Size of the /items collection.")] = 1000,
    files: Annotated[int, typer.Option(min=0, help="Files listed by /files.")] = 100,
    latency: Annotated[str, typer.Option(help="Added latency, e.g. 20ms.")] = "0",
    latency_dist: Annotated[str, typer.Option(help="fixed | uniform | lognormal")] = "fixed",
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="500/502/503.")] = 0.0,
    rate_429: Annotated[float, typer.Option("--rate-429", min=0, max=1, help="429s.")] = 0.0,
    retry_after: Annotated[str, typer.Option(help="Retry-After of injected 429s.")] = "1",
    retry_after_format: Annotated[str, typer.Option(help="seconds | http-date")] = "seconds",
    timeout_rate: Annotated[float, typer.Option(min=0, max=1, help="Never answer.")] = 0.0,
    reset_rate: Annotated[float, typer.Option(min=0, max=1, help="Drop connection.")] = 0.0,
    slow_body_rate: Annotated[float, typer.Option(min=0, max=1, help="Trickle body.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option(min=0, max=1, help="Bad JSON.")] = 0.0,
    ack_loss_rate: Annotated[float, typer.Option(
        min=0, max=1, help="Store the request, then drop the answer.")] = 0.0,
    rate_limit: Annotated[str | None, typer.Option(help="Per client, e.g. 50/s.")] = None,
    seed: Annotated[int | None, typer.Option(help="Make faults reproducible.")] = None,
) -> None:
    """Serve a local HTTP API that misbehaves on purpose (docs/demo-api.md)."""
    import asyncio

    from headrace.cli import _demo_faults as f
    from headrace.cli._demo_api import DemoApiOptions, serve

    try:
        faults = f.FaultConfig(
            latency=f.parse_duration(latency), latency_dist=f.LatencyDist(latency_dist),
            retry_after=f.parse_duration(retry_after),
            retry_after_format=f.RetryAfterFormat(retry_after_format),
            rate_limit=f.parse_rate_limit(rate_limit) if rate_limit else None,
            rates={"error": error_rate, "429": rate_429, "timeout": timeout_rate,
                   "reset": reset_rate, "slow_body": slow_body_rate, "malformed": malformed_rate,
                   "ack_loss": ack_loss_rate})
    except ValueError as exc:
        print(f"headrace: error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    options = DemoApiOptions(items=items, files=files, faults=faults, seed=seed)

    def ready(url: str) -> None:
        print(f"headrace demo-api listening on {url}", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(options, host, port, ready))
    except OSError as exc:
        print(f"headrace: error: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        raise typer.Exit(2) from None


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one line per error, a traceback only with --debug."""
    try:
        code = app(args=argv, prog_name="headrace", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except HeadraceError as exc:
        if State.debug:
            _print_traceback(exc)
        print(f"headrace: error: {_redact(exc.one_line())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("headrace: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__name__ == "Abort":
            return 130
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors
            exc.show()
            return 2
        if State.debug:
            _print_traceback(exc)
        print(_redact(f"headrace: internal error: {type(exc).__name__}: {exc} "
                      "(run with --debug for the traceback)"), file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0
