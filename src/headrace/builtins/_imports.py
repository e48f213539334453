"""User code named in a pipeline by import path (``module:attr``): functions, models."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from headrace.errors import ConfigValueError


def load_object(path: str, where: str, what: str) -> Any:
    """``module:attr.attr`` imported; any failure of user code is a config error at ``where``."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # any import-time failure of user code is a config error
        raise ConfigValueError(
            f"{where}: cannot load {what} {path!r}: {type(exc).__name__}: {exc}",
            hint="the module is looked up next to the pipeline file and on sys.path",
        ) from None
    return obj


def load_function(path: str, where: str) -> Callable[..., Any]:
    obj = load_object(path, where, "function")
    if not callable(obj):
        raise ConfigValueError(f"{where}: {path!r} is not callable")
    return obj
