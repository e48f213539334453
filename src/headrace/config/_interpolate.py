"""``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` in string values.

The value of a variable whose name looks secret is registered with ``_secrets`` as it is
substituted, so that nothing headrace prints afterwards shows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from headrace.errors import ConfigValueError

from ._locations import Loc
from ._secrets import is_secret_name, register_secret

_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")


def interpolate(
    data: Any,
    environ: Mapping[str, str],
    where: Callable[[Loc], str],
    path: Loc = (),
) -> Any:
    """Return ``data`` with variables in every string replaced; ``$$`` is a literal ``$``."""
    if isinstance(data, dict):
        return {k: interpolate(v, environ, where, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, environ, where, (*path, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = environ.get(name)
        if value is None or (value == "" and op is not None):
            value = arg if op == ":-" else None
        if value is not None:
            if is_secret_name(name):
                register_secret(value)
            return value
        dotted = ".".join(str(p) for p in path)
        if op == ":?":
            raise ConfigValueError(f"{where(path)}: {dotted}: ${{{name}}} is not set: {arg}")
        raise ConfigValueError(
            f"{where(path)}: {dotted}: environment variable {name} is not set",
            hint=f"export {name}=... or write ${{{name}:-default}}",
        )

    return _PATTERN.sub(substitute, data)
