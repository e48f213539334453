"""Turn pydantic validation errors into one line naming file:line, key and a hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import ValidationError

from headrace.errors import ConfigValueError

from ._locations import Loc, Locations


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


def dotted(path: Loc) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def validation_error(
    exc: ValidationError,
    locations: Locations,
    prefix: Loc = (),
    known_keys: Iterable[str] = (),
    what: str = "",
) -> ConfigValueError:
    """The first error of ``exc`` as a ``ConfigValueError``; ``prefix`` is where the model sits."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path: Loc = (*prefix, *loc)
    where = locations.where(path)
    label = f"{what}: " if what else ""
    key = dotted(path)
    hint = None
    if error["type"] == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        message = f"{where}: {label}unknown key '{key}'"
        hint = did_you_mean(name, known_keys)
    elif error["type"] == "missing":
        message = f"{where}: {label}missing required key '{key}'"
    else:
        got = error.get("input")
        shown = repr(got) if isinstance(got, str | int | float | bool) else type(got).__name__
        message = f"{where}: {label}{key}: {error['msg']} (got {shown})"
    return ConfigValueError(message, hint=hint)
