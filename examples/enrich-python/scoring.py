"""A per-record function for the ``python`` step: plain Python, no headrace imports needed."""

from __future__ import annotations

from typing import Any


def score(record: dict[str, Any]) -> dict[str, Any] | None:
    if record["email"].endswith("@example.test"):
        return None  # test accounts: filtered, and counted as filtered
    orders = record["orders"]
    record["score"] = round(min(1.0, orders / 20 + (0.2 if record["newsletter"] else 0.0)), 3)
    record["tier"] = "gold" if record["score"] >= 0.8 else "silver"
    return record
