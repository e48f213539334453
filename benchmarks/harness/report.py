"""Result tables, printed as aligned text and written as markdown."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

MiB = 1024 * 1024


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.headers)]
        line = "  ".join("-" * w for w in widths)
        out = [self.title, "=" * len(self.title), _pad(self.headers, widths), line]
        out += [_pad(r, widths) for r in self.rows]
        return "\n".join([*out, "", *self.notes])

    def markdown(self) -> str:
        out = [f"## {self.title}", "", "| " + " | ".join(self.headers) + " |",
               "|" + "|".join("---" for _ in self.headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out)


def _pad(cells: list[str], widths: list[int]) -> str:
    # first column left-aligned (names), the others right-aligned (numbers)
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()


def goal(value: float, target: float, *, at_least: bool = True) -> str:
    met = value >= target if at_least else value <= target
    return "met" if met else "MISSED"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / MiB:,.0f}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        import psutil

        return f"{psutil.virtual_memory().total / 1024**3:.1f} GiB"
    except ImportError:
        return "unknown"


def machine_info() -> list[tuple[str, str]]:
    info = [
        ("os", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("cpu", f"{os.cpu_count()} logical cpus, {_cpu_model()}"),
        ("memory", _memory()),
        ("python", platform.python_version()),
    ]
    for dist in ("headrace", "pyarrow", "duckdb", "polars", "pandas"):
        try:
            info.append((dist, version(dist)))
        except PackageNotFoundError:
            info.append((dist, "not installed"))
    return info
