"""``headrace plugins list | show | check``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

plugins_app = typer.Typer(help="Discovered plugins and their options.", no_args_is_help=True)
KindOpt = Annotated[str | None, typer.Option(help="source, step or sink")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "headrace" / "plugin-summaries.json"


def _module_stamp(target: str) -> str:
    """Where the plugin's module file is and when it changed, found without importing it
    (its parent packages are imported): edits to an editable install refresh the cache."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(target.partition(":")[0])
    except (ImportError, ValueError):
        return ""
    origin = spec.origin if spec else None
    try:
        return f"{origin}@{os.stat(origin).st_mtime_ns}" if origin else ""
    except OSError:
        return ""


def summaries(infos: list[Any]) -> dict[tuple[str, str, str], str]:
    """One-line summaries by (kind, name, distribution). Read from a cache keyed by the
    distribution, version and module file; a plugin is imported only when that changed."""
    from headrace.errors import HeadraceError
    from headrace.plugin import load_plugin

    path = _cache_file()
    try:
        cache: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    result: dict[tuple[str, str, str], str] = {}
    changed = False
    for info in infos:
        key = f"{info.kind}:{info.name}:{info.distribution}"
        stamp = f"{info.version} {info.target} {_module_stamp(info.target)}"
        entry = cache.get(key)
        if entry and entry.get("stamp") == stamp:
            result[(info.kind, info.name, info.distribution)] = entry["summary"]
            continue
        if info.disabled or info.conflicts:
            summary = "(not loaded)"
        else:
            try:
                summary = load_plugin(info.kind, info.name).summary
            except HeadraceError as exc:
                result[(info.kind, info.name, info.distribution)] = f"BROKEN: {exc.message}"
                continue
            cache[key] = {"stamp": stamp, "summary": summary}
            changed = True
        result[(info.kind, info.name, info.distribution)] = summary
    if changed:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
            temporary.replace(path)
        except OSError:
            pass  # a read-only home only costs the imports next time
    return result


@plugins_app.command("list")
def plugins_list(kind: KindOpt = None, as_json: JsonOpt = False) -> None:
    """List discovered plugins: kind, name, distribution, version, summary."""
    from headrace.plugin import discover

    found = [p for p in discover() if kind is None or p.kind == kind]
    texts = summaries(found)
    if as_json:
        typer.echo(json.dumps([{**p.__dict__, "conflicts": list(p.conflicts),
                                "summary": texts[(p.kind, p.name, p.distribution)]}
                               for p in found]))
        return
    for p in found:
        state = " [disabled]" if p.disabled else (" [name conflict]" if p.conflicts else "")
        typer.echo(f"{p.kind:<7} {p.name:<16} {p.distribution} {p.version:<8} "
                   f"{texts[(p.kind, p.name, p.distribution)]}{state}")


def _matches(name: str, kind: str | None) -> list[Any]:
    from headrace.errors import PluginNotFoundError
    from headrace.plugin import discover

    found = discover()
    matches = [p for p in found if p.name == name and (kind is None or p.kind == kind)]
    if not matches:
        from headrace.config import did_you_mean

        names = sorted({p.name for p in found})
        raise PluginNotFoundError(f"no plugin named '{name}'",
                                  hint=did_you_mean(name, names) or "headrace plugins list")
    return matches


def _capabilities(cls: Any) -> str:
    flags = [flag for flag in ("resumable", "idempotent", "atomic", "thread_safe")
             if getattr(cls, flag, False) is True]
    if cls.kind == "step":
        flags.append(f"batch_format={cls.batch_format}")
        flags.append(f"executor={cls.default_executor}")
    return ", ".join(flags) or "none"


@plugins_app.command("show")
def plugins_show(name: Annotated[str, typer.Argument(help="Plugin name.")],
                 kind: KindOpt = None) -> None:
    """Show a plugin: summary, capabilities, options (type, default, description), example."""
    from headrace.cli._schema import options_rows
    from headrace.errors import PluginError
    from headrace.plugin import load_plugin

    for info in _matches(name, kind):
        if info.conflicts:
            raise PluginError(f"{info.kind} plugin '{name}' is registered by more than one "
                              f"package: {info.provider}, {', '.join(info.conflicts)}")
        cls = load_plugin(info.kind, info.name)
        typer.echo(f"{info.kind} {info.name} ({info.distribution} {info.version}): "
                   f"{cls.summary}")
        typer.echo(f"  capabilities: {_capabilities(cls)}")
        typer.echo("  options:")
        for option, type_name, default, description in options_rows(info.kind, info.name):
            typer.echo(f"    {option:<16} {type_name:<22} {default:<14} {description}")
        typer.echo("  example:" if cls.example else "  example (required options):")
        typer.echo(f"    use: {info.name}")
        for key, value in _example(cls).items():
            typer.echo(f"    {key}: {value}")


def _example(cls: Any) -> dict[str, str]:
    """The plugin's declared example, else its required options with their types."""
    if cls.example:
        return {key: json.dumps(value) for key, value in cls.example.items()}
    return {field.alias or option: f"<{getattr(field.annotation, '__name__', 'value')}>"
            for option, field in cls.Options.model_fields.items() if field.is_required()}


@plugins_app.command("check")
def plugins_check(
    name: Annotated[str, typer.Argument(help="Plugin name.")],
    kind: KindOpt = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="An option for the check: option=value (default: the plugin's example)."
    )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the conformance suite on an installed plugin: options model, lifecycle under
    cancellation, and the capabilities it declares. Exit 1 when a check fails."""
    from headrace.testing import check_installed, parse_settings

    _matches(name, kind)  # an unknown name: exit 2 with a "did you mean"
    report = check_installed(kind, name, parse_settings(set_ or []) or None)
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in report.results]))
    else:
        typer.echo(report.format())
    raise typer.Exit(0 if report.ok else 1)
