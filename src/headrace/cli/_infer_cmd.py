"""``headrace infer PATH``: print a starting JSON Schema for a file's records.

The inference is ``headrace.builtins.validation``'s; this module only parses the options
and renders. Imported when the CLI starts: only typer and the standard library at the top.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class InferFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


def infer_command(
    path: Annotated[Path, typer.Argument(help="A CSV, JSON Lines or Parquet file.")],
    rows: Annotated[int, typer.Option("--rows", min=1, max=10_000_000,
                                      help="Records to sample from the start.")] = 10_000,
    fmt: Annotated[InferFormat | None, typer.Option(
        "--format", help="The file's format (default: from its extension).")] = None,
    bounds: Annotated[bool, typer.Option(
        "--bounds", help="Emit the sample's numeric ranges as minimum/maximum "
        "(default: as examples, which validate nothing).")] = False,
) -> None:
    """Print a starting JSON Schema (draft 2020-12) inferred from a sample of PATH."""
    from headrace.builtins.validation import infer_file

    result = infer_file(path, rows=rows, fmt=fmt.value if fmt else None, bounds=bounds)
    typer.echo(json.dumps(result.schema, indent=2, ensure_ascii=False, default=str))
    note = f"inferred from {result.rows:,} records of {path}"
    if result.rejected:
        note += f" ({result.rejected:,} lines did not parse and are not in the sample)"
    print(note, file=sys.stderr)
