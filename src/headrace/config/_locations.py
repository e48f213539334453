"""Where each key of a pipeline file sits, so errors can name ``file:line``.

A key that came from another layer (``--set``, an ``HEADRACE_<PLUGIN>__<OPTION>`` variable, the
user config file) has an origin instead, and errors name that: ``env HEADRACE_CSV__DELIMITER``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

Loc = tuple[str | int, ...]


@dataclass
class Locations:
    """Maps a key path such as ``("steps", 0, "where")`` to its 1-based line in ``file``.

    ``origins`` maps key paths to where their value came from, as printed (``p.yaml:12``,
    ``--set``, ``env NAME``, ``user config FILE:LINE``); it wins over ``lines``.
    """

    file: Path
    lines: dict[Loc, int] = field(default_factory=dict)
    origins: dict[Loc, str] = field(default_factory=dict)

    def line_of(self, path: Loc) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def where(self, path: Loc) -> str:
        """The origin of ``path`` or of its nearest ancestor that has one: ``file:line``,
        ``--set``, ``env NAME`` or ``user config FILE:LINE``."""
        for end in range(len(path), -1, -1):
            prefix = tuple(path[:end])
            origin = self.origins.get(prefix)
            if origin is not None:
                return origin
            line = self.lines.get(prefix)
            if line is not None:
                return f"{self.file}:{line}"
        return str(self.file)


_TOML_ARRAY = re.compile(r"^\s*\[\[\s*([^\]]+?)\s*\]\]")
_TOML_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_TOML_KEY = re.compile(r"""^\s*("[^"]+"|'[^']+'|[A-Za-z0-9_.-]+)\s*=""")


def _split_dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in text.split(".")]


def toml_locations(file: Path, text: str) -> Locations:
    """Line numbers of tables and keys in a TOML document (tomllib keeps none)."""
    locations = Locations(file)
    prefix: list[str | int] = []
    array_counts: dict[tuple[str | int, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if match := _TOML_ARRAY.match(line):
            parts: list[str | int] = list(_split_dotted(match.group(1)))
            key = tuple(parts)
            index = array_counts.get(key, -1) + 1
            array_counts[key] = index
            prefix = [*parts, index]
            locations.lines.setdefault(key, number)
            locations.lines[tuple(prefix)] = number
        elif match := _TOML_TABLE.match(line):
            prefix = list(_split_dotted(match.group(1)))
            for end in range(1, len(prefix)):  # [a.b] also says where a begins
                locations.lines.setdefault(tuple(prefix[:end]), number)
            locations.lines[tuple(prefix)] = number
        elif match := _TOML_KEY.match(line):
            locations.lines[(*prefix, *_split_dotted(match.group(1)))] = number
    return locations
