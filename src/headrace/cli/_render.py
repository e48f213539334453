"""The run summary for people (a table on stderr) and for programs (JSON on stdout)."""

from __future__ import annotations

from typing import Any


def summary_text(summary: dict[str, Any]) -> str:
    status = summary["status"]
    lines = [
        f"{status}: {summary['records_in']:,} in, {summary['records_out']:,} out, "
        f"{summary['records_filtered']:,} filtered, {summary['records_dead']:,} dead "
        f"in {summary['duration_s']:.2f}s"
    ]
    steps = summary.get("steps") or []
    if steps:
        width = max(len(s["id"]) for s in steps)
        lines.append(f"  {'step':<{width}}  {'in':>12} {'out':>12} {'filtered':>10} "
                     f"{'dead':>8} {'p50 ms':>8} {'p95 ms':>8}")
        lines.extend(
            f"  {s['id']:<{width}}  {s['in']:>12,} {s['out']:>12,} {s['filtered']:>10,} "
            f"{s['dead']:>8,} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f}"
            for s in steps
        )
    if summary.get("dead_letter"):
        lines.append(f"  dead letters: {summary['dead_letter']}")
    for key in ("reason", "error", "interrupted_by"):
        if summary.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {summary[key]}")
    if summary.get("output_discarded"):
        lines.append("  output discarded: the run was stopped before it could drain")
    return "\n".join(lines)
