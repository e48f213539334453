"""What the conformance suite reports: one result per check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One check: its name (``class``, ``lifecycle``, ``resumable`` ...), how it went, and
    why (what was wrong, or why it could not run)."""

    name: str
    status: Status
    detail: str = ""


@dataclass
class ConformanceReport:
    """The results of ``check_plugin`` for one plugin."""

    kind: str
    plugin: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed (skipped ones do not count against the plugin)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    def result(self, name: str) -> CheckResult:
        """The result of the check called ``name``."""
        for item in self.results:
            if item.name == name:
                return item
        raise KeyError(name)

    def format(self) -> str:
        """A readable report: a heading, then one line per check."""
        passed = sum(r.status == "passed" for r in self.results)
        skipped = sum(r.status == "skipped" for r in self.results)
        lines = [f"{self.kind} {self.plugin}: {passed} passed, {len(self.failures)} failed, "
                 f"{skipped} skipped"]
        width = max((len(r.name) for r in self.results), default=0)
        for item in self.results:
            detail = f"  {item.detail}" if item.detail else ""
            lines.append(f"  {item.status.upper():7} {item.name:{width}}{detail}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with the report when any check failed."""
        if not self.ok:
            raise AssertionError(self.format())

    def __str__(self) -> str:
        return self.format()
