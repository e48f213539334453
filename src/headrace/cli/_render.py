"""The run summary for people (a table on stderr) and for programs (JSON on stdout)."""

from __future__ import annotations

import shlex
from typing import Any


def summary_text(summary: dict[str, Any], pipeline: str | None = None) -> str:
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
                     f"{'dead':>8} {'retries':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        lines.extend(
            f"  {s['id']:<{width}}  {s['in']:>12,} {s['out']:>12,} {s['filtered']:>10,} "
            f"{s['dead']:>8,} {s.get('retries', 0):>8,} {s.get('p50_ms', 0.0):>8.1f} "
            f"{s.get('p95_ms', 0.0):>8.1f} {s.get('p99_ms', 0.0):>8.1f}"
            for s in steps
        )
    if summary.get("dead_letter"):
        lines.append(f"  dead letters: {summary['dead_letter']}")
    checkpoint = summary.get("checkpoint") or {}
    if checkpoint:
        line = f"  checkpoint: {checkpoint.get('records', 0):,} records committed"
        if checkpoint.get("resumed_after"):
            line += f" ({checkpoint['resumed_after']:,} by earlier runs)"
        lines.append(line)
    for key in ("reason", "error", "interrupted_by"):
        if summary.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {summary[key]}")
    if summary.get("output_discarded"):
        lines.append("  output discarded: the run was stopped before it could drain")
    if checkpoint.get("resumable"):
        hint = f"headrace run {shlex.quote(pipeline) if pipeline else 'PIPELINE'} --resume"
        if checkpoint.get("run_dir") and not pipeline:
            hint += f"  (or: headrace resume {shlex.quote(str(checkpoint['run_dir']))})"
        lines.append(f"  resume with: {hint}")
    return "\n".join(lines)
