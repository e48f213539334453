"""The architecture holds: layers import only downward; importing headrace stays light;
each package's ``__all__`` is sorted and complete."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import headrace

PACKAGE = Path(headrace.__file__).parent
# Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {
    "errors": 0, "_version": 0, "sampledata": 0,
    "config": 1,
    "plugin": 2,
    "engine": 3,
    "builtins": 4,
    "testing": 5,  # the test kit: runs pipelines through the engine
    "cli": 6,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "headrace":
        return None
    if len(parts) == 1:
        return -1  # the package root re-exports errors and the version only
    return LAYERS.get(parts[1])


def imports_of(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return found


def test_layers_import_only_downward() -> None:
    """No module imports a layer above its own (cli > testing > builtins > engine > plugin >
    config)."""
    violations = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        own = layer_of(module)
        if own is None or own < 0:
            continue
        for imported, line in imports_of(path):
            target = layer_of(imported)
            if target is not None and target > own:
                violations.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert violations == []


def test_engine_names_no_concrete_plugin_and_no_cli() -> None:
    """The engine never mentions builtins, the CLI, rich or a broker."""
    for path in (PACKAGE / "engine").rglob("*.py"):
        for imported, line in imports_of(path):
            assert not imported.startswith(("headrace.builtins", "headrace.cli", "rich",
                                            "redis", "aio_pika")), f"{path}:{line}"


def test_import_headrace_is_light() -> None:
    """import headrace loads neither the CLI, rich, pandas, duckdb nor broker clients."""
    code = ("import sys, headrace; heavy = ['rich', 'pandas', 'duckdb', 'redis', 'aio_pika', "
            "'typer', 'prometheus_client', 'polars']; "
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["headrace", "headrace.config", "headrace.plugin",
                                  "headrace.engine", "headrace.errors", "headrace.testing"])
def test_public_names_are_sorted_and_exist(name: str) -> None:
    """Each public module's __all__ is sorted, and every name in it exists."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    for item in exported:
        assert hasattr(module, item), f"{name}.{item}"


@pytest.mark.parametrize("name", ["headrace.config", "headrace.plugin", "headrace.engine",
                                  "headrace.testing"])
def test_everything_public_is_exported(name: str) -> None:
    """Public names defined in a package's private modules are all re-exported."""
    module = importlib.import_module(name)
    public = {n for n in vars(module) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert public - submodules - {"annotations"} <= set(module.__all__)


def test_import_testing_does_not_import_pytest() -> None:
    """headrace.testing is usable outside pytest: only its pytest_plugin module imports it."""
    code = "import sys, headrace.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_error_tree_has_one_root() -> None:
    """Every exception headrace defines derives from HeadraceError."""
    from headrace import errors

    for item in errors.__all__:
        assert issubclass(getattr(errors, item), errors.HeadraceError)


def test_a_columnar_run_does_not_import_pandas(tmp_path: Path) -> None:
    """csv -> filter/derive/select -> parquet never loads pandas (200 ms of start-up)."""
    (tmp_path / "in.csv").write_text("a,b\n1,x\n2,\n3,z\n")
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: light\nsource: {use: csv, path: in.csv}\n"
        "steps: [{use: filter, where: 'a > 1'}, {use: derive, columns: {c: 'a * 2'}},"
        " {use: select, columns: [a, c]}]\n"
        "sink: {use: parquet, path: out.parquet}\n")
    code = ("import sys; from headrace.cli import main; "
            f"code = main(['-q', 'run', {str(tmp_path / 'p.yaml')!r}]); "
            "print(code, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0 False", out.stderr
