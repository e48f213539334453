"""Secrets from ``${VAR}`` interpolation, and hiding them in anything headrace prints.

A variable is secret when its name contains one of ``SECRET_NAME_PARTS`` (case-insensitive);
its value is registered when the pipeline file is interpolated. ``redact`` replaces every
registered value, and the password of ``scheme://user:password@host`` URLs, with ``***``.
The registry is process-wide on purpose: log formatters and the CLI's error printing have no
pipeline object at hand, and a secret once loaded must stay hidden for the whole process.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH", "DSN")
MASK = "***"
# Shorter values would turn every "1" or "ab" in a message into ***, hiding all else.
_MIN_LENGTH = 4
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/]*@")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def is_secret_name(name: str) -> bool:
    """True when an environment variable's name says it holds a secret."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def register_secret(value: str) -> None:
    """Hide ``value`` from now on, also as it appears inside ``repr()`` or JSON text."""
    global _pattern
    if len(value) < _MIN_LENGTH:
        return
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with registered secrets and URL passwords replaced by ``***``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    return text


def redact_data(data: Any) -> Any:
    """A copy of JSON-like ``data`` (dicts, lists, strings) with every string redacted."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(v) for v in data]
    return data


def forget_secrets() -> None:
    """Empty the registry (for tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
