"""Arrow schemas as text, for checkpoints (the ledger stores JSON)."""

from __future__ import annotations

import base64

import pyarrow as pa


def schema_to_text(schema: pa.Schema | None) -> str | None:
    return base64.b64encode(schema.serialize().to_pybytes()).decode() if schema else None


def schema_from_text(text: str | None) -> pa.Schema | None:
    if not text:
        return None
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
