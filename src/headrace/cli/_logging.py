"""Log records on stderr, as text or one JSON object per line, secrets redacted.

Messages can quote records (a bad line, a rejected value), so a message could hold a fake log
line or a terminal escape: text output escapes control characters, JSON output encodes them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}
# C0 and C1 controls (ESC, CSI, CR, LF...), DEL and the Unicode line separators; not tab.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
_ESCAPES |= {0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def escape_controls(text: str) -> str:
    """``text`` on one line: newlines and escape sequences shown as ``\\n``, ``\\x1b``."""
    return text.translate(_ESCAPES)


def _redact(text: str) -> str:
    # Imported here: loading headrace.config costs start-up time that --version need not pay.
    from headrace.config import redact

    return redact(text)


def _redact_data(data: Any) -> Any:
    from headrace.config import redact_data

    return redact_data(data)


class TextFormatter(logging.Formatter):
    """``headrace LEVEL logger: message``; a traceback follows indented, never at column 0."""

    def format(self, record: logging.LogRecord) -> str:
        message = escape_controls(_redact(record.getMessage()))
        line = f"headrace {record.levelname} {record.name}: {message}"
        details = _details(self, record)
        if details:
            lines = _redact(details).splitlines()
            line += "".join(f"\n    {escape_controls(part)}" for part in lines)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS:
                entry.setdefault(key, _redact_data(value))
        details = _details(self, record)
        if details:
            entry["exc"] = _redact(details)
        # ensure_ascii: every control character, DEL and C1 included, becomes \uXXXX.
        return json.dumps(entry, default=lambda o: _redact(str(o)))


def _details(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def setup_logging(log_format: LogFormat, level: int) -> None:
    """Send every logger's records to stderr in ``log_format``, replacing an earlier setup."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_headrace", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._headrace = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
