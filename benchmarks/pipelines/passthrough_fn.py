"""The per-record function of benchmark 3, shared by headrace and the bare-loop baseline."""

from __future__ import annotations

from typing import Any


def touch(record: dict[str, Any]) -> dict[str, Any]:
    record["flight"] = record["flight"] + 1
    return record
